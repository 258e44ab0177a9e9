//! `add-mirror` and `del-mirror`: a permanent copy of ports' traffic to another port
//! (Open vSwitch's mirror, a switch's SPAN port).

use super::Ctx;
use crate::error::Error;
use vswitch_proto::{AddMirror as Req, Command, MirrorInfo};

/// Mirror (SPAN) what ports receive and send to an output port
///
/// Every frame a selected port receives from its guest, and every frame the switch
/// sends to it, is copied to the output port as it is. The output port takes no other
/// part in forwarding: nothing is sent to it but the copies, and what it receives is
/// dropped (`mirror_output` in `stats`). Deleting a port removes it from its mirrors.
#[derive(clap::Args, Debug)]
pub struct AddMirror {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// A port whose traffic is copied (repeat for more)
    #[arg(long = "select-port", value_name = "PORT", required = true)]
    pub select: Vec<String>,
    /// The port the copies leave by
    #[arg(long = "output-port", value_name = "PORT")]
    pub output: String,
    /// The mirror's name [default: span-OUTPUT]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// Remove a mirror
#[derive(clap::Args, Debug)]
pub struct DelMirror {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// The mirror
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Succeed if there is nothing to delete
    #[arg(long)]
    pub if_exists: bool,
}

impl AddMirror {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::AddMirror(Req {
            bridge: self.bridge.clone(),
            name: self.name.clone(),
            select: self.select.clone(),
            output: self.output.clone(),
        }))
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |m: MirrorInfo| format!("{}\n", line(&m)))
    }
}

impl DelMirror {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DelMirror {
            bridge: self.bridge.clone(),
            name: self.name.clone(),
            if_exists: self.if_exists,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}

/// `Mirror NAME: P,Q -> OUT`.
pub fn line(m: &MirrorInfo) -> String {
    format!("Mirror {}: {} -> {}", m.name, m.select.join(","), m.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering() {
        let m = MirrorInfo {
            name: "span-v9".into(),
            select: vec!["v1".into(), "v2".into()],
            output: "v9".into(),
        };
        assert_eq!(line(&m), "Mirror span-v9: v1,v2 -> v9");
    }
}
