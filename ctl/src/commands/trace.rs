//! `trace`: what the pipeline does with a frame, stage by stage, without sending it
//! (like `ovs-appctl ofproto/trace`).

use super::Ctx;
use crate::error::Error;
use std::fmt::Write as _;
use vswitch_proto::{Command, TraceReq, TraceResult};

/// Show what the pipeline does with a frame, stage by stage, without sending it
///
/// FLOW is Open vSwitch's flow syntax, e.g.
/// `dl_src=02:00:00:00:00:05,ip,nw_dst=10.1.0.5,tcp,tp_dst=80` (fields: in_port,
/// dl_src, dl_dst, dl_vlan, dl_type, nw_src, nw_dst, nw_ttl, nw_proto, tp_src, tp_dst,
/// icmp_type, icmp_code, icmp_id, arp_op; keywords ip, arp, icmp, tcp, udp), or a whole
/// frame in hex. Fields not given are filled in as a guest on IN_PORT would send them
/// (its MAC, the router's MAC for another subnet) and shown. Nothing is learned,
/// recorded, counted or sent. The last line is `Final: output PORT[,PORT]`,
/// `Final: flood PORT,…`, `Final: drop (REASON)` or `Final: router (WHAT)`.
#[derive(clap::Args, Debug)]
pub struct Trace {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// The port the frame arrives on (a vxlan port: NAME or NAME@REMOTE)
    #[arg(value_name = "IN_PORT")]
    pub in_port: String,
    /// The flow (words are joined with commas) or the frame in hex
    #[arg(value_name = "FLOW", required = true, num_args = 1..)]
    pub flow: Vec<String>,
}

impl Trace {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::Trace(TraceReq {
            bridge: self.bridge.clone(),
            in_port: self.in_port.clone(),
            flow: self.flow.join(","),
        }))
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |t: TraceResult| render(&t))
    }
}

/// The last line of a trace.
pub fn final_line(t: &TraceResult) -> String {
    let ports: Vec<&str> = t.outputs.iter().map(|o| o.port.as_str()).collect();
    match t.verdict.as_str() {
        "drop" => format!("drop ({})", t.drop_reason.as_deref().unwrap_or("?")),
        "router" => format!("router ({})", t.punt.as_deref().unwrap_or("?")),
        "flood" if ports.is_empty() => "flood (no other port)".into(),
        v => format!("{v} {}", ports.join(",")),
    }
}

pub fn render(t: &TraceResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Bridge: {}  In port: {}", t.bridge, t.in_port);
    let _ = writeln!(s, "Flow: {}", t.flow);
    s.push('\n');
    let w = t.stages.iter().map(|x| x.stage.len()).max().unwrap_or(0);
    for st in &t.stages {
        let _ = writeln!(s, "  {:<w$}  {}", st.stage, st.text);
    }
    s.push('\n');
    if let Some(f) = &t.out_flow {
        let _ = writeln!(s, "Out flow: {f}");
    }
    let _ = writeln!(s, "Final: {}", final_line(t));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch_proto::{TraceOutput, TraceStage};

    fn result(verdict: &str) -> TraceResult {
        TraceResult {
            bridge: "br1".into(),
            in_port: "v1".into(),
            flow: "dl_src=02:00:00:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff".into(),
            frame: String::new(),
            stages: vec![
                TraceStage {
                    stage: "input".into(),
                    text: "frame arrives on port v1 of bridge br1".into(),
                },
                TraceStage {
                    stage: "l2".into(),
                    text: "flood".into(),
                },
            ],
            verdict: verdict.into(),
            outputs: vec![],
            drop_reason: None,
            punt: None,
            out_flow: None,
        }
    }

    #[test]
    fn final_lines() {
        let mut t = result("flood");
        assert_eq!(final_line(&t), "flood (no other port)");
        t.outputs = vec![
            TraceOutput {
                port: "v2".into(),
                vlan: None,
            },
            TraceOutput {
                port: "v3".into(),
                vlan: Some(10),
            },
        ];
        assert_eq!(final_line(&t), "flood v2,v3");
        t.verdict = "output".into();
        t.outputs.truncate(1);
        assert_eq!(final_line(&t), "output v2");
        let mut d = result("drop");
        d.drop_reason = Some("isolated".into());
        assert_eq!(final_line(&d), "drop (isolated)");
        let mut r = result("router");
        r.punt = Some("ttl_exceeded".into());
        assert_eq!(final_line(&r), "router (ttl_exceeded)");
        let text = render(&d);
        assert!(
            text.contains("  input  frame arrives on port v1 of bridge br1\n"),
            "{text}"
        );
        assert!(text.ends_with("Final: drop (isolated)\n"), "{text}");
    }

    #[test]
    fn flow_words_are_joined() {
        use crate::cli::{parse, Cmd};
        match parse(&["trace", "br1", "v1", "ip", "nw_dst=10.0.0.6", "--json"])
            .unwrap()
            .command
        {
            Cmd::Trace(t) => assert_eq!(
                t.request().unwrap(),
                Command::Trace(TraceReq {
                    bridge: "br1".into(),
                    in_port: "v1".into(),
                    flow: "ip,nw_dst=10.0.0.6".into(),
                })
            ),
            c => panic!("{c:?}"),
        }
    }
}
