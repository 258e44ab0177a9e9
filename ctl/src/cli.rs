//! The command line: global flags, one subcommand per protocol command (each defined in
//! its own file under `commands/`), and the rendering of clap's errors as one line.

use crate::commands::{self, Ctx};
use crate::error::Error;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Configure and inspect vswitchd, the userspace virtual switch.
///
/// Global flags go before the command; --json is also accepted after it.
#[derive(Parser, Debug)]
#[command(name = "vswitchctl", version)]
pub struct Args {
    /// vswitchd's control socket [default: $VSWITCH_SOCK, else /run/vswitch/vswitchd.sock]
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub socket: Option<PathBuf>,
    /// Print the result as JSON (stable field names); errors as {"error": "..."} too
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// While vswitchd is starting (no socket yet), retry connecting for up to SECONDS
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = 0,
        help_heading = "Global options"
    )]
    pub wait: u64,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    Version(commands::version::Version),
    AddBr(commands::add_br::AddBr),
    DelBr(commands::del_br::DelBr),
    ListBr(commands::list_br::ListBr),
    Show(commands::show::Show),
    AddPort(commands::add_port::AddPort),
    DelPort(commands::del_port::DelPort),
    ListPorts(commands::list_ports::ListPorts),
    FdbShow(commands::fdb_show::FdbShow),
    FdbFlush(commands::fdb_flush::FdbFlush),
    Stats(commands::stats::Stats),
    Top(commands::top::Top),
    AddRoute(commands::add_route::AddRoute),
    DelRoute(commands::del_route::DelRoute),
    ListRoutes(commands::list_routes::ListRoutes),
    AddHost(commands::add_host::AddHost),
    DelHost(commands::del_host::DelHost),
    ListHosts(commands::list_hosts::ListHosts),
    ListAllocations(commands::list_allocations::ListAllocations),
    DhcpLeases(commands::dhcp_leases::DhcpLeases),
    DhcpReserve(commands::dhcp_reserve::DhcpReserve),
    DhcpUnreserve(commands::dhcp_unreserve::DhcpUnreserve),
    Masquerade(commands::masquerade::Masquerade),
    DelMasquerade(commands::del_masquerade::DelMasquerade),
    Masquerade6(commands::masquerade6::Masquerade6),
    DelMasquerade6(commands::del_masquerade6::DelMasquerade6),
    Publish(commands::publish::Publish),
    Unpublish(commands::unpublish::Unpublish),
    ListPublished(commands::list_published::ListPublished),
    CtShow(commands::ct_show::CtShow),
    Trace(commands::trace::Trace),
    Capture(commands::capture::Capture),
    SetPort(commands::set_port::SetPort),
    ClearPort(commands::set_port::ClearPort),
    AddMirror(commands::mirror::AddMirror),
    DelMirror(commands::mirror::DelMirror),
    Completions(commands::completions::Completions),
    Man(commands::completions::Man),
    Monitor(commands::monitor::Monitor),
    ClusterShow(commands::cluster_show::ClusterShow),
    FastpathShow(commands::fastpath_show::FastpathShow),
}

impl Cmd {
    /// Run the command against vswitchd; the text to print on stdout on success.
    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        match self {
            Cmd::Version(c) => c.run(ctx),
            Cmd::AddBr(c) => c.run(ctx),
            Cmd::DelBr(c) => c.run(ctx),
            Cmd::ListBr(c) => c.run(ctx),
            Cmd::Show(c) => c.run(ctx),
            Cmd::AddPort(c) => c.run(ctx),
            Cmd::DelPort(c) => c.run(ctx),
            Cmd::ListPorts(c) => c.run(ctx),
            Cmd::FdbShow(c) => c.run(ctx),
            Cmd::FdbFlush(c) => c.run(ctx),
            Cmd::Stats(c) => c.run(ctx),
            Cmd::Top(c) => c.run(ctx),
            Cmd::AddRoute(c) => c.run(ctx),
            Cmd::DelRoute(c) => c.run(ctx),
            Cmd::ListRoutes(c) => c.run(ctx),
            Cmd::AddHost(c) => c.run(ctx),
            Cmd::DelHost(c) => c.run(ctx),
            Cmd::ListHosts(c) => c.run(ctx),
            Cmd::ListAllocations(c) => c.run(ctx),
            Cmd::DhcpLeases(c) => c.run(ctx),
            Cmd::DhcpReserve(c) => c.run(ctx),
            Cmd::DhcpUnreserve(c) => c.run(ctx),
            Cmd::Masquerade(c) => c.run(ctx),
            Cmd::DelMasquerade(c) => c.run(ctx),
            Cmd::Masquerade6(c) => c.run(ctx),
            Cmd::DelMasquerade6(c) => c.run(ctx),
            Cmd::Publish(c) => c.run(ctx),
            Cmd::Unpublish(c) => c.run(ctx),
            Cmd::ListPublished(c) => c.run(ctx),
            Cmd::CtShow(c) => c.run(ctx),
            Cmd::Trace(c) => c.run(ctx),
            Cmd::Capture(c) => c.run(ctx),
            Cmd::SetPort(c) => c.run(ctx),
            Cmd::ClearPort(c) => c.run(ctx),
            Cmd::AddMirror(c) => c.run(ctx),
            Cmd::DelMirror(c) => c.run(ctx),
            Cmd::Completions(c) => c.run(),
            Cmd::Man(c) => c.run(),
            Cmd::Monitor(c) => c.run(ctx),
            Cmd::ClusterShow(c) => c.run(ctx),
            Cmd::FastpathShow(c) => c.run(ctx),
        }
    }
}

/// Whether `--json` was typed, judged before clap parses, so that even an argument error
/// is reported as JSON. Arguments after `--` are operands, not flags.
pub fn wants_json<I: IntoIterator<Item = OsString>>(args: I) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// clap's error as one line: the first paragraph of its rendering (what is wrong, with
/// the offending argument), without the usage and tip paragraphs that follow.
pub fn usage_error(e: &clap::Error) -> Error {
    if matches!(
        e.kind(),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return Error::Usage("missing command (see 'vswitchctl --help')".into());
    }
    let text = e.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let joined = first.join(" ");
    let msg = joined.strip_prefix("error: ").unwrap_or(&joined);
    if msg.is_empty() {
        return Error::Usage(e.kind().as_str().unwrap_or("bad arguments").to_string());
    }
    // clap's "did you mean" sits in a tip paragraph: keep it on the one line.
    let suggested = [
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedArg,
        ContextKind::SuggestedValue,
    ]
    .iter()
    .find_map(|k| match e.get(*k) {
        Some(ContextValue::String(s)) => Some(vec![s.clone()]),
        Some(ContextValue::Strings(v)) if !v.is_empty() => Some(v.clone()),
        _ => None,
    });
    match suggested {
        Some(s) => {
            let quoted: Vec<String> = s.iter().map(|x| format!("'{x}'")).collect();
            Error::Usage(format!("{msg} (did you mean {}?)", quoted.join(" or ")))
        }
        None => Error::Usage(msg.to_string()),
    }
}

/// Parse `args` (with the program name first), for tests.
#[cfg(test)]
pub fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("vswitchctl").chain(args.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn usage(args: &[&str]) -> String {
        match parse(args) {
            Ok(a) => panic!("{args:?} parsed: {a:?}"),
            Err(e) => usage_error(&e).to_string(),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn json_before_or_after_the_command() {
        assert!(parse(&["--json", "list-br"]).unwrap().json);
        assert!(parse(&["list-br", "--json"]).unwrap().json);
        assert!(parse(&["list-ports", "br1", "--json"]).unwrap().json);
        assert!(!parse(&["list-br"]).unwrap().json);
    }

    #[test]
    fn socket_flag() {
        let a = parse(&["--socket", "/tmp/x.sock", "show"]).unwrap();
        assert_eq!(a.socket, Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(parse(&["show"]).unwrap().socket, None);
    }

    #[test]
    fn json_detected_before_parsing() {
        let os = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(wants_json(os(&["vswitchctl", "frob", "--json"])));
        assert!(!wants_json(os(&["vswitchctl", "frob"])));
        assert!(!wants_json(os(&["vswitchctl", "add-br", "--", "--json"])));
    }

    #[test]
    fn argument_errors_are_one_line() {
        assert_eq!(
            usage(&["frobnicate"]),
            "unrecognized subcommand 'frobnicate'"
        );
        assert_eq!(
            usage(&["shw"]),
            "unrecognized subcommand 'shw' (did you mean 'show'?)"
        );
        assert_eq!(
            usage(&["add-br", "b", "--may-exists"]),
            "unexpected argument '--may-exists' found (did you mean '--may-exist'?)"
        );
        assert_eq!(
            usage(&["add-port", "br1"]),
            "the following required arguments were not provided: <PORT>"
        );
        assert_eq!(
            usage(&["add-br", "br1", "--mtu", "big"]),
            "invalid value 'big' for '--mtu <N>': invalid digit found in string"
        );
        assert_eq!(
            usage(&["list-br", "--frob"]),
            "unexpected argument '--frob' found"
        );
        assert_eq!(usage(&[]), "missing command (see 'vswitchctl --help')");
        assert_eq!(
            usage(&["--json"]),
            "missing command (see 'vswitchctl --help')"
        );
        for args in [
            &["add-port", "br1", "p", "--type", "bogus"][..],
            &["add-port", "br1", "p", "--tag", "1", "--trunks", "2"],
            &["del-br"],
            &["show", "extra"],
        ] {
            let m = usage(args);
            assert!(!m.contains('\n') && !m.is_empty(), "{args:?}: {m:?}");
        }
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for args in [
            &["--help"][..],
            &["add-br", "--help"],
            &["help"],
            &["--version"],
        ] {
            let e = parse(args).unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion),
                "{args:?}: {:?}",
                e.kind()
            );
        }
    }
}
