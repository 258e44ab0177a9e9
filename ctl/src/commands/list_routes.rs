//! `list-routes`: connected subnets and static routes.

use super::Ctx;
use crate::error::Error;
use crate::output::{or_dash, table};
use vswitch_proto::{Command, RouteEntry};

/// List connected and static routes
#[derive(clap::Args, Debug)]
pub struct ListRoutes {}

impl ListRoutes {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::ListRoutes)
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |r: Vec<RouteEntry>| render(&r))
    }
}

pub fn render(routes: &[RouteEntry]) -> String {
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            vec![
                r.cidr.clone(),
                or_dash(r.via.as_deref()),
                r.bridge.clone(),
                r.kind.clone(),
            ]
        })
        .collect();
    table(&["DESTINATION", "VIA", "BRIDGE", "KIND"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_and_static() {
        let r = |cidr: &str, via: Option<&str>, bridge: &str, kind: &str| RouteEntry {
            cidr: cidr.into(),
            via: via.map(String::from),
            bridge: bridge.into(),
            kind: kind.into(),
        };
        assert_eq!(
            render(&[
                r("10.0.0.0/24", None, "br1", "connected"),
                r("198.51.100.0/24", None, "wan", "connected"),
                r("10.2.0.0/24", Some("10.0.0.254"), "br1", "static"),
            ]),
            "DESTINATION      VIA         BRIDGE  KIND\n\
             10.0.0.0/24      -           br1     connected\n\
             198.51.100.0/24  -           wan     connected\n\
             10.2.0.0/24      10.0.0.254  br1     static\n"
        );
    }
}
