//! A private subnet behind a NAT, on one machine, with network namespaces: a client
//! namespace (where the worker runs), a router namespace that masquerades the client's
//! traffic (nftables) and forgets a flow idle for a few seconds (its conntrack timeout for
//! established TCP, as a NAT gateway forgets one idle for 350 s), and a server namespace
//! (the local AWS endpoint and the job's Invoke API). The test process reaches the server
//! through the router without NAT, to start and watch things.
//!
//! Needs root, `ip` and `nft`. Everything is removed when the [`NatLab`] drops, also when a
//! test fails; namespaces left by a process that died are removed by the next lab.

use std::process::Command;
use std::time::Duration;

/// Names start with this; the creating process's id follows the lab's index.
const PREFIX: &str = "fleetnat";

pub struct NatLab {
    idx: u32,
    pub client: String,
    pub router: String,
    pub server: String,
    /// The server's address, as every namespace reaches it.
    pub server_addr: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Kills whatever runs in `ns`, then deletes it (its interfaces go with it).
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = run(&["ip", "netns", "delete", ns]);
}

/// `(index, pid)` of a lab namespace's name.
fn parse(name: &str) -> Option<(u32, i32)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (idx, rest) = rest.split_once('-')?;
    let pid = rest.get(..rest.len().checked_sub(1)?)?;
    Some((idx.parse().ok()?, pid.parse().ok()?))
}

/// Removes namespaces of labs whose process is gone, and host links no lab owns.
fn remove_stale() {
    for ns in namespaces() {
        if let Some((_, pid)) = parse(&ns) {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            if !alive {
                remove_namespace(&ns);
            }
        }
    }
    let owned: Vec<u32> = namespaces()
        .iter()
        .filter_map(|n| parse(n).map(|(i, _)| i))
        .collect();
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in links.lines() {
        let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else {
            continue;
        };
        if let Some(idx) = name
            .strip_prefix("fn")
            .and_then(|r| r.strip_suffix('h'))
            .and_then(|i| i.parse::<u32>().ok())
            && !owned.contains(&idx)
        {
            let _ = run(&["ip", "link", "delete", name]);
        }
    }
}

/// Whether this process runs as root (its `/proc/self` belongs to its effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl NatLab {
    /// Sets the lab up; the router forgets flows idle for `idle_secs`. Panics with the
    /// command that failed (after removing what it created).
    pub fn new(idle_secs: u32) -> NatLab {
        assert!(
            is_root(),
            "the NAT test needs root (network namespaces); CI runs as root"
        );
        remove_stale();
        let pid = std::process::id();
        for idx in 0..100u32 {
            // Creating the host link claims the index: a link name exists once.
            let (host, host_peer) = (format!("fn{idx}h"), format!("fn{idx}rh"));
            if run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &host_peer,
            ])
            .is_err()
            {
                continue;
            }
            let router = format!("{PREFIX}{idx}-{pid}r");
            let lab = NatLab {
                idx,
                client: format!("{PREFIX}{idx}-{pid}c"),
                router,
                server: format!("{PREFIX}{idx}-{pid}s"),
                server_addr: format!("10.{}.2.2", 100 + idx),
            };
            if let Err(e) = lab.build(idle_secs) {
                drop(lab);
                panic!("setting up the NAT lab: {e}");
            }
            return lab;
        }
        panic!("no free NAT lab index");
    }

    fn net(&self, subnet: u32, host: u32) -> String {
        format!("10.{}.{subnet}.{host}", 100 + self.idx)
    }

    fn build(&self, idle_secs: u32) -> Result<(), String> {
        let i = self.idx;
        let (c, r, s) = (&self.client, &self.router, &self.server);
        for ns in [c, r, s] {
            run(&["ip", "netns", "add", ns])?;
        }
        for ns in [c, r, s] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        // client <-> router, server <-> router, this namespace <-> router.
        let links = [
            (format!("fn{i}c"), Some(c.as_str()), format!("fn{i}rc"), 1),
            (format!("fn{i}s"), Some(s.as_str()), format!("fn{i}rs"), 2),
            (format!("fn{i}h"), None, format!("fn{i}rh"), 3),
        ];
        for (end, ns, router_end, subnet) in &links {
            if ns.is_some() {
                run(&[
                    "ip", "link", "add", end, "type", "veth", "peer", "name", router_end,
                ])?;
            }
            run(&["ip", "link", "set", router_end, "netns", r])?;
            let addr = format!("{}/24", self.net(*subnet, 2));
            match ns {
                Some(ns) => {
                    run(&["ip", "link", "set", end, "netns", ns])?;
                    run(&["ip", "-n", ns, "addr", "add", &addr, "dev", end])?;
                    run(&["ip", "-n", ns, "link", "set", end, "up"])?;
                }
                None => {
                    run(&["ip", "addr", "add", &addr, "dev", end])?;
                    run(&["ip", "link", "set", end, "up"])?;
                }
            }
            let raddr = format!("{}/24", self.net(*subnet, 1));
            run(&["ip", "-n", r, "addr", "add", &raddr, "dev", router_end])?;
            run(&["ip", "-n", r, "link", "set", router_end, "up"])?;
        }
        for (ns, subnet) in [(c, 1), (s, 2)] {
            let gateway = self.net(subnet, 1);
            run(&["ip", "-n", ns, "route", "add", "default", "via", &gateway])?;
        }
        run(&[
            "ip",
            "route",
            "add",
            &format!("{}/24", self.net(2, 0)),
            "via",
            &self.net(3, 1),
        ])?;
        in_ns(r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // The client subnet leaves through the NAT; this namespace's traffic is only routed.
        let rules = format!(
            "table ip fleetnat {{\n  chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    ip saddr {}/24 oifname \"fn{i}rs\" masquerade\n  }}\n}}\n",
            self.net(1, 0)
        );
        let file = std::env::temp_dir().join(format!("{r}.nft"));
        std::fs::write(&file, rules).map_err(|e| format!("{}: {e}", file.display()))?;
        let loaded = in_ns(r, &["nft", "-f", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        loaded?;
        in_ns(
            r,
            &[
                "sysctl",
                "-qw",
                &format!("net.netfilter.nf_conntrack_tcp_timeout_established={idle_secs}"),
            ],
        )?;
        // A probe every second once one is due (the kernel's default interval is 75 s, under
        // a NAT gateway's 350 s but not under this router's few seconds); whether and when
        // the first probe goes is the client's own setting.
        in_ns(c, &["sysctl", "-qw", "net.ipv4.tcp_keepalive_intvl=1"])?;
        Ok(())
    }

    /// `ip netns exec <ns>`, to put in front of a command.
    pub fn exec_prefix(ns: &str) -> Vec<String> {
        ["ip", "netns", "exec", ns]
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// How long the router remembers an idle flow.
    pub fn idle(&self) -> Duration {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.router,
                "sysctl",
                "-n",
                "net.netfilter.nf_conntrack_tcp_timeout_established",
            ])
            .output()
            .expect("sysctl");
        Duration::from_secs(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("seconds"),
        )
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        // The root end of the host link goes with its peer in the router namespace.
        for ns in [&self.client, &self.server, &self.router] {
            remove_namespace(ns);
        }
        let _ = run(&["ip", "link", "delete", &format!("fn{}h", self.idx)]);
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn lab_names_carry_index_and_process() {
        assert_eq!(parse("fleetnat7-1234r"), Some((7, 1234)));
        assert_eq!(parse("fleetnat12-99c"), Some((12, 99)));
        assert_eq!(parse("other"), None);
        assert_eq!(parse("fleetnat-1r"), None);
    }
}
