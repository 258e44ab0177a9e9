//! `list-published`: the published ports (`*` listens on every outside address).

use super::Ctx;
use crate::error::Error;
use crate::output::table;
use vswitch_proto::{Command, PublishedEntry};

/// List published ports
#[derive(clap::Args, Debug)]
pub struct ListPublished {}

impl ListPublished {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::ListPublished)
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |p: Vec<PublishedEntry>| render(&p))
    }
}

/// `PORT` or `FIRST-LAST`.
fn range(first: u16, last: Option<u16>) -> String {
    match last {
        Some(l) => format!("{first}-{l}"),
        None => first.to_string(),
    }
}

/// An address as it goes before `:PORT`: IPv6 in brackets.
fn host(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

pub fn render(published: &[PublishedEntry]) -> String {
    let rows: Vec<Vec<String>> = published
        .iter()
        .map(|p| {
            vec![
                p.proto.clone(),
                format!(
                    "{}:{}",
                    p.ip.as_deref().map_or_else(|| "*".to_string(), host),
                    range(p.port, p.port_end)
                ),
                format!(
                    "{}:{}",
                    host(&p.target_ip),
                    range(p.target_port, p.target_port_end)
                ),
            ]
        })
        .collect();
    table(&["PROTO", "LISTEN", "TARGET"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let p = PublishedEntry {
            proto: "tcp".into(),
            ip: Some("2001:db8:ff::2".into()),
            port: 8080,
            target_ip: "fd00:1::5".into(),
            target_port: 80,
            port_end: None,
            target_port_end: None,
        };
        assert_eq!(
            render(&[p]),
            "PROTO  LISTEN                 TARGET\n\
             tcp    [2001:db8:ff::2]:8080  [fd00:1::5]:80\n"
        );
    }

    #[test]
    fn any_address_shows_as_star() {
        let p = |ip: Option<&str>, port: u16| PublishedEntry {
            proto: "tcp".into(),
            ip: ip.map(String::from),
            port,
            target_ip: "10.0.0.5".into(),
            target_port: 80,
            port_end: None,
            target_port_end: None,
        };
        assert_eq!(
            render(&[p(None, 8080), p(Some("198.51.100.2"), 8081)]),
            "PROTO  LISTEN             TARGET\n\
             tcp    *:8080             10.0.0.5:80\n\
             tcp    198.51.100.2:8081  10.0.0.5:80\n"
        );
        let mut r = p(None, 8000);
        r.port_end = Some(8010);
        r.target_port_end = Some(90);
        assert_eq!(
            render(&[r]),
            "PROTO  LISTEN       TARGET\n\
             tcp    *:8000-8010  10.0.0.5:80-90\n"
        );
    }
}
