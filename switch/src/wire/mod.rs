//! Wire layer: in-place views of the headers the L2 pipeline touches.
//!
//! Read first: IEEE 802.3 (Ethernet II framing), IEEE 802.1Q (VLAN tag: TPID 0x8100,
//! TCI = PCP:3 DEI:1 VID:12). Untrusted bytes are length-checked once in
//! [`EthFrame::parse`]; after that, no accessor can panic.

pub mod arp;
pub mod csum;
mod ethernet;
pub mod gro;
pub mod gso;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
mod mac;
pub mod vnet;
pub mod vxlan;

pub use ethernet::{
    field, vlan_tag, EthFrame, ParseError, ETHERTYPE_QINQ, ETHERTYPE_VLAN, ETH_HLEN, VLAN_HLEN,
};
pub use mac::MacAddr;
pub use vnet::{VnetHdr, VNET_HDR_LEN};
