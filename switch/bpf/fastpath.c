// SPDX-License-Identifier: Apache-2.0
//
// vswitch kernel fast path (switch/src/fastpath/ is the user-space half; read its
// module docs first).
//
// The programs share one cache of decisions the userspace pipeline already made:
//
//   fp_sock  a socket filter on vswitchd's AF_PACKET socket of a `system` port. Packet
//            taps run in __netif_receive_skb_core *before* tc ingress, so this is the
//            first look at every received frame. It looks the frame up once, leaves the
//            verdict in a per-CPU slot, and hides hits from vswitchd (returns 0).
//   fp_tc    the tcx ingress program of the same port, run next on the same CPU in the
//            same softirq. It takes the verdict the socket filter left (same key) and
//            carries it out: a hit is redirected to the egress device, a miss goes on
//            (TC_ACT_OK) and vswitchd already has its copy. So both halves act on ONE
//            lookup, and a cache change between the tap and tc can never deliver a frame
//            twice or not at all. Without a verdict (no socket filter ran: the frame is
//            not going to vswitchd anyway) fp_tc looks up by itself.
//   fp_tap_out  the tcx *egress* program of an `internal` port's TAP (in vswitchd's
//            namespace): what the host sends on the TAP passes it before it is queued
//            for vswitchd's TAP fd. No socket filter there: it looks up by itself, and
//            a hit is redirected (never reaching the fd) while a miss goes on to
//            vswitchd, so a frame is delivered once by construction. Entries *into*
//            an internal port carry FP_F_INGRESS: redirected into the TAP's ingress,
//            the host receives them as if vswitchd had written them to the fd.
//
// fp_tc and fp_tap_out share the lookup (fp_find) and the rewrite/count/redirect body
// (fp_forward).
//
// The cache (fp_flows) is keyed by what the L2 decision depends on: ingress ifindex,
// VLAN as received, source and destination MAC (ip_dst 0). A routed entry (a frame to
// the router's MAC, forwarded between bridges) also has the IPv4 destination in its key
// and rewrites the frame as vswitchd's router does: both MACs, TTL - 1 with an
// incremental header checksum (RFC 1624). Frames a routed entry may not take (TTL <= 1,
// IP options, fragments, over the egress MTU, a multicast/broadcast source) go to
// vswitchd, which answers with ICMP or drops as before. An entry is valid only while
// its generation equals fp_gen[0]; vswitchd bumps that on every configuration
// snapshot, FDB flush, MAC move and neighbour change, which makes every older entry
// miss at once.
//
// Routed IPv6 lives in fp_route6 (L2 key plus the IPv6 destination; see "Routed IPv6"
// below): both MACs rewritten, hop limit - 1.
//
// Established NAT connections live in fp_nat, keyed by the L4 tuple too (see "Established
// NAT flows" below); the socket filter's NAT verdict carries that tuple in a second
// per-CPU slot, so fp_tc translates exactly the frame the filter hid.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define FP_MAX_FLOWS 16384
#define FP_MAX_SLOTS 4096

// Action flags.
#define FP_F_PEER 1 // bpf_redirect_peer: straight into the veth peer's ingress
#define FP_F_INGRESS 2 // redirect to the device's ingress (an internal port's host side)
#define FP_F_ROUTED 4 // routed: rewrite MACs, TTL - 1 (see fp_routed_ok)
#define FP_F_NAT 8 // an established NAT flow (fp_nat): addresses and ports translated too
#define FP_F_TUNNEL 16 // out: VXLAN, tunnel key from fp_tun_ports[out_slot] (see fp_tun_encap)
#define FP_F_ROUTED6 32 // routed IPv6 (fp_route6): rewrite MACs, hop limit - 1 (fp6_ok)

struct fp_key {
	__u32 ifindex;
	__u16 vid; // VLAN id as received (hardware-accelerated tag), 0: untagged
	__u8 src[6];
	__u8 dst[6];
	__u16 pad;
	__u32 ip_dst; // routed entries: IPv4 destination as in the header; 0: L2 entry
};

struct fp_action {
	__u64 gen;
	__u32 out_ifindex;
	__u16 in_slot;
	__u16 out_slot;
	__u16 push_vid; // 0: leave untagged
	__u16 flags;
	__u16 bvlan; // the bridge VLAN (for vswitchd's own bookkeeping)
	__u16 mtu; // routed: the egress bridge's MTU (larger IP packets go to vswitchd)
	__u64 packets;
	__u64 bytes;
	__u64 last_hit; // bpf_ktime_get_coarse_ns
	__u8 new_dst[6]; // routed: the next hop's MAC
	__u8 new_src[6]; // routed: the router's MAC on the egress bridge
	__u32 pad;
};

// What fp_sock decided for the frame it just saw on this CPU.
struct fp_verdict {
	struct fp_key key;
	__u32 state; // FP_V_*
	__u32 out_ifindex;
	__u16 in_slot;
	__u16 out_slot;
	__u16 push_vid;
	__u16 flags;
	__u8 new_dst[6];
	__u8 new_src[6];
};

#define FP_V_NONE 0
#define FP_V_MISS 1
#define FP_V_HIT 2

struct fp_port_stats {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 tx_packets;
	__u64 tx_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FP_MAX_FLOWS);
	__type(key, struct fp_key);
	__type(value, struct fp_action);
} fp_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fp_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_verdict);
} fp_verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FP_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct fp_port_stats);
} fp_stats SEC(".maps");

// Build the key of the frame in `skb`; false when the frame is not for the cache
// (too short, a tag other than one 802.1Q tag in the skb's metadata).
static __always_inline int fp_make_key(struct __sk_buff *skb, struct fp_key *k)
{
	__u8 hdr[ETH_HLEN];

	if (skb->len < ETH_HLEN)
		return 0;
	if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
		return 0;
	// A tag still in the frame (the kernel strips one 802.1Q/802.1ad tag before
	// taps and tc): QinQ or unusual framing, left to vswitchd.
	if ((hdr[12] == 0x81 && hdr[13] == 0x00) || (hdr[12] == 0x88 && hdr[13] == 0xa8))
		return 0;
	k->ifindex = skb->ifindex;
	k->vid = 0;
	if (skb->vlan_present) {
		if (skb->vlan_proto != bpf_htons(ETH_P_8021Q))
			return 0;
		k->vid = skb->vlan_tci & 0x0fff;
	}
	__builtin_memcpy(k->dst, hdr, 6);
	__builtin_memcpy(k->src, hdr + 6, 6);
	k->pad = 0;
	k->ip_dst = 0;
	return 1;
}

// The entry for `k` if it is of the current generation; NULL otherwise.
static __always_inline struct fp_action *fp_live(struct fp_key *k)
{
	__u32 zero = 0;
	struct fp_action *a = bpf_map_lookup_elem(&fp_flows, k);
	__u64 *gen;

	if (!a)
		return 0;
	gen = bpf_map_lookup_elem(&fp_gen, &zero);
	if (!gen || a->gen != *gen)
		return 0;
	return a;
}

#define IP_OFF ETH_HLEN
#define IP_TTL_OFF (IP_OFF + 8)
#define IP_CSUM_OFF (IP_OFF + 10)

// Whether the IPv4 frame in `skb` may take routed entry `a`: exactly the frames
// vswitchd's router would forward without a word (l3::decide). Everything else goes
// up: TTL <= 1 (time exceeded), IP options and fragments (rare; NAT and the ICMP
// quoting want the whole header), over the egress MTU (fragmentation needed, or the
// drop of a DF-less packet), a multicast/broadcast source (dropped). A GSO super-frame
// is judged by its segments: IP and L4 headers plus gso_size, as vswitchd does.
static __always_inline int fp_routed_ok(struct __sk_buff *skb, __u16 mtu)
{
	__u8 h[20];
	__u32 tot, seg, hdrs;

	if (bpf_skb_load_bytes(skb, IP_OFF, h, sizeof(h)) < 0)
		return 0;
	if (h[0] != 0x45) // IPv4 without options
		return 0;
	if ((h[6] & 0x3f) || h[7]) // MF or a fragment offset
		return 0;
	if (h[8] <= 1) // TTL
		return 0;
	if ((h[12] & 0xf0) == 0xe0 || (h[12] == 0xff && h[13] == 0xff && h[14] == 0xff && h[15] == 0xff))
		return 0;
	tot = (__u32)h[2] << 8 | h[3];
	if (!skb->gso_size) {
		seg = tot;
	} else {
		if (h[9] == 6) { // TCP: its header length from the data offset
			__u8 doff;

			if (bpf_skb_load_bytes(skb, IP_OFF + 20 + 12, &doff, 1) < 0)
				return 0;
			hdrs = 20 + (__u32)(doff >> 4) * 4;
		} else if (h[9] == 17) { // UDP
			hdrs = 20 + 8;
		} else {
			return 0;
		}
		seg = hdrs + skb->gso_size;
	}
	return seg <= mtu;
}

// Look the frame up: its L2 entry, else (IPv4) the routed entry for its destination,
// which this frame must be allowed to take. `k` is left as last looked up (with the
// IPv4 destination for an IPv4 frame that missed its L2 entry). Counts the hit.
static __always_inline struct fp_action *fp_lookup(struct __sk_buff *skb, struct fp_key *k,
						   __u32 len)
{
	struct fp_action *a = fp_live(k);
	__be16 proto;

	if (!a) {
		if (k->vid || bpf_skb_load_bytes(skb, 12, &proto, 2) < 0 ||
		    proto != bpf_htons(ETH_P_IP))
			return 0;
		if (bpf_skb_load_bytes(skb, IP_OFF + 16, &k->ip_dst, 4) < 0) {
			k->ip_dst = 0;
			return 0;
		}
		a = fp_live(k);
		if (!a || !(a->flags & FP_F_ROUTED) || !fp_routed_ok(skb, a->mtu))
			return 0;
	}
	__sync_fetch_and_add(&a->packets, 1);
	__sync_fetch_and_add(&a->bytes, len);
	a->last_hit = bpf_ktime_get_coarse_ns();
	return a;
}

// Frame length as vswitchd counts it: with the 802.1Q tag in the frame.
static __always_inline __u32 fp_len(struct __sk_buff *skb)
{
	return skb->len + (skb->vlan_present ? 4 : 0);
}

// ---- Established NAT flows ----------------------------------------------------------
//
// A conntrack entry vswitchd saw in both directions (state Established), offered like a
// routed entry but keyed by the whole L4 tuple as received: the frame is routed (MACs,
// TTL) and its addresses and ports translated as vswitchd's conntrack would
// (pipeline::nat::rewrite). Kept apart from fp_flows so the L2 and routed keys stay
// 24 bytes. Frames that change the connection's state (TCP SYN, FIN, RST) and frames
// after the entry's deadline (the conntrack entry's expiry as vswitchd last extended
// it) go up to vswitchd, which moves or ends the connection and answers as before.

#define FP_MAX_NAT 16384
#define L4_OFF (IP_OFF + 20)
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

struct fp_nat_key {
	__u32 ifindex;
	__u16 vid;
	__u8 src[6];
	__u8 dst[6]; // the router's MAC
	__u8 proto; // 6, 17 or 1 (ICMP echo)
	__u8 pad;
	__u32 ip_src; // addresses and ports as in the frame (network byte order)
	__u32 ip_dst;
	__u16 sport; // ICMP: echo request (id, 0), echo reply (0, id), as conntrack keys it
	__u16 dport;
};

struct fp_nat_action {
	__u64 gen;
	__u32 out_ifindex;
	__u16 in_slot;
	__u16 out_slot;
	__u16 push_vid;
	__u16 flags; // FP_F_ROUTED | FP_F_NAT
	__u16 mtu;
	__u16 pad;
	__u64 packets;
	__u64 bytes;
	__u64 last_hit; // bpf_ktime_get_coarse_ns
	__u64 deadline; // bpf_ktime_get_coarse_ns: from then on frames go to vswitchd
	__u8 new_dst[6];
	__u8 new_src[6];
	__u32 nat_src; // the tuple the frame leaves with (same encoding as the key)
	__u32 nat_dst;
	__u16 nat_sport;
	__u16 nat_dport;
};

// What fp_sock decided about a NAT hit, beside its fp_verdict (flags has FP_F_NAT):
// the whole tuple it matched, so that fp_tc applies the translation only to that frame.
struct fp_nat_verdict {
	struct fp_nat_key key;
	__u32 nat_src;
	__u32 nat_dst;
	__u16 nat_sport;
	__u16 nat_dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FP_MAX_NAT);
	__type(key, struct fp_nat_key);
	__type(value, struct fp_nat_action);
} fp_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_nat_verdict);
} fp_nat_verdicts SEC(".maps");

// The NAT key of the IPv4 frame whose L2 key (with its IPv4 destination) is `k`, and
// its TCP flags (0 for UDP and ICMP). False for what conntrack does not track as a
// tuple (IP options, fragments, other protocols, ICMP other than echo).
static __always_inline int fp_nat_key_of(struct __sk_buff *skb, const struct fp_key *k,
					 struct fp_nat_key *nk, __u8 *tcp_flags)
{
	__u8 h[20];
	__u8 l4[14];

	if (!k->ip_dst || bpf_skb_load_bytes(skb, IP_OFF, h, sizeof(h)) < 0)
		return 0;
	if (h[0] != 0x45 || (h[6] & 0x3f) || h[7])
		return 0;
	nk->ifindex = k->ifindex;
	nk->vid = k->vid;
	__builtin_memcpy(nk->src, k->src, 6);
	__builtin_memcpy(nk->dst, k->dst, 6);
	nk->proto = h[9];
	nk->pad = 0;
	__builtin_memcpy(&nk->ip_src, h + 12, 4);
	__builtin_memcpy(&nk->ip_dst, h + 16, 4);
	*tcp_flags = 0;
	if (h[9] == 6) {
		if (bpf_skb_load_bytes(skb, L4_OFF, l4, 14) < 0)
			return 0;
		*tcp_flags = l4[13];
	} else if (h[9] == 17) {
		if (bpf_skb_load_bytes(skb, L4_OFF, l4, 4) < 0)
			return 0;
	} else if (h[9] == 1) {
		if (bpf_skb_load_bytes(skb, L4_OFF, l4, 6) < 0)
			return 0;
		if (l4[0] == 8) { // echo request: (id, 0)
			__builtin_memcpy(&nk->sport, l4 + 4, 2);
			nk->dport = 0;
		} else if (l4[0] == 0) { // echo reply: (0, id)
			nk->sport = 0;
			__builtin_memcpy(&nk->dport, l4 + 4, 2);
		} else {
			return 0; // errors: vswitchd translates the quoted packet
		}
		return 1;
	} else {
		return 0;
	}
	__builtin_memcpy(&nk->sport, l4, 2);
	__builtin_memcpy(&nk->dport, l4 + 2, 2);
	return 1;
}

// The live NAT entry for the frame (L2 key `k` as fp_lookup left it), counted as hit,
// its key and translation in `nv`; NULL when the frame must go to vswitchd.
static __always_inline struct fp_nat_action *fp_nat_find(struct __sk_buff *skb,
							 const struct fp_key *k, __u32 len,
							 struct fp_nat_verdict *nv)
{
	__u32 zero = 0;
	struct fp_nat_action *a;
	__u64 *gen, now;
	__u8 tcp_flags;

	if (!fp_nat_key_of(skb, k, &nv->key, &tcp_flags))
		return 0;
	// vswitchd moves the connection on these (Closing, a new connection).
	if (tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST))
		return 0;
	a = bpf_map_lookup_elem(&fp_nat, &nv->key);
	if (!a)
		return 0;
	gen = bpf_map_lookup_elem(&fp_gen, &zero);
	if (!gen || a->gen != *gen)
		return 0;
	now = bpf_ktime_get_coarse_ns();
	// Past the conntrack entry's expiry as vswitchd last extended it: the connection
	// may be gone there, so this frame must not be translated here.
	if (now >= a->deadline)
		return 0;
	if (!(a->flags & FP_F_NAT) || !fp_routed_ok(skb, a->mtu))
		return 0;
	__sync_fetch_and_add(&a->packets, 1);
	__sync_fetch_and_add(&a->bytes, len);
	a->last_hit = now;
	nv->nat_src = a->nat_src;
	nv->nat_dst = a->nat_dst;
	nv->nat_sport = a->nat_sport;
	nv->nat_dport = a->nat_dport;
	return a;
}

// Both keys alike (byte by byte: BPF has no memcmp).
static __always_inline int fp_nat_keys_equal(const struct fp_nat_key *a,
					     const struct fp_nat_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	int diff = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*a) / 4); i++)
		diff |= x[i] != y[i];
	return !diff;
}

// One address word of the IPv4 header at `off` from `from` to `to`: the header
// checksum, and (TCP/UDP) the L4 checksum's pseudo-header part. BPF_F_PSEUDO_HDR
// makes inet_proto_csum_replace4 right for every ip_summed: a full checksum is
// updated, a CHECKSUM_PARTIAL one (GSO super-frames, veth offload) gets only the
// pseudo-header change (the device or the segmentation completes the rest), and a
// CHECKSUM_COMPLETE skb->csum is kept right. BPF_F_MARK_MANGLED_0 (UDP): a checksum
// of 0 (none) stays 0, a result of 0 is sent as 0xffff. A CHECKSUM_PARTIAL UDP field
// is never 0 (it holds the folded pseudo-header sum, which includes the protocol), so
// "0 means none" cannot be mistaken.
static __always_inline int fp_nat_addr(struct __sk_buff *skb, __u32 off, __u32 csum_off,
				       __u64 l4_flags, __u32 from, __u32 to)
{
	if (from == to)
		return 0;
	if (csum_off && bpf_l4_csum_replace(skb, csum_off, from, to,
					    l4_flags | BPF_F_PSEUDO_HDR | sizeof(to)) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, from, to, sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

// One port word (or the echo id) at `off`: the L4 checksum without the pseudo-header
// flag (a CHECKSUM_PARTIAL checksum does not cover the ports yet: left alone).
static __always_inline int fp_nat_port(struct __sk_buff *skb, __u32 off, __u32 csum_off,
				       __u64 l4_flags, __u16 from, __u16 to)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, csum_off, from, to, l4_flags | sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

// Translate the frame matched as `nv->key` to `nv`'s tuple (pipeline::nat::rewrite).
static __always_inline int fp_nat_rewrite(struct __sk_buff *skb, const struct fp_nat_verdict *nv)
{
	__u32 csum_off = 0;
	__u64 fl = 0;

	if (nv->key.proto == 6) {
		csum_off = L4_OFF + 16;
	} else if (nv->key.proto == 17) {
		csum_off = L4_OFF + 6;
		fl = BPF_F_MARK_MANGLED_0;
	}
	// ICMP has no pseudo-header: its checksum only sees the id.
	if (fp_nat_addr(skb, IP_OFF + 12, csum_off, fl, nv->key.ip_src, nv->nat_src) < 0 ||
	    fp_nat_addr(skb, IP_OFF + 16, csum_off, fl, nv->key.ip_dst, nv->nat_dst) < 0)
		return -1;
	if (nv->key.proto == 1)
		// Request (id, 0) or reply (0, id): one of the two is the id.
		return fp_nat_port(skb, L4_OFF + 4, L4_OFF + 2, 0, nv->key.sport | nv->key.dport,
				   nv->nat_sport | nv->nat_dport);
	if (fp_nat_port(skb, L4_OFF, csum_off, fl, nv->key.sport, nv->nat_sport) < 0)
		return -1;
	return fp_nat_port(skb, L4_OFF + 2, csum_off, fl, nv->key.dport, nv->nat_dport);
}

// fp_sock's NAT lookup for a frame fp_lookup missed: on a hit, the verdict (`v`, and the
// tuple in fp_nat_verdicts) for fp_tc; true when the frame is to be hidden.
static __always_inline int fp_nat_sock(struct __sk_buff *skb, struct fp_verdict *v)
{
	__u32 zero = 0;
	struct fp_nat_verdict *nv = bpf_map_lookup_elem(&fp_nat_verdicts, &zero);
	struct fp_nat_action *a;

	if (!nv)
		return 0;
	a = fp_nat_find(skb, &v->key, fp_len(skb), nv);
	if (!a)
		return 0;
	v->state = FP_V_HIT;
	v->out_ifindex = a->out_ifindex;
	v->in_slot = a->in_slot;
	v->out_slot = a->out_slot;
	v->push_vid = a->push_vid;
	v->flags = a->flags;
	__builtin_memcpy(v->new_dst, a->new_dst, 6);
	__builtin_memcpy(v->new_src, a->new_src, 6);
	return 1;
}

// fp_tc taking fp_sock's NAT verdict: the translation in `x` if the verdict was made
// for this very frame (same tuple), else false (fp_tc then looks up by itself).
static __always_inline int fp_nat_take(struct __sk_buff *skb, const struct fp_key *k,
				       struct fp_nat_verdict *x)
{
	__u32 zero = 0;
	struct fp_nat_verdict *nv = bpf_map_lookup_elem(&fp_nat_verdicts, &zero);
	__u8 tcp_flags;

	if (!nv || !fp_nat_key_of(skb, k, &x->key, &tcp_flags) ||
	    !fp_nat_keys_equal(&nv->key, &x->key))
		return 0;
	x->nat_src = nv->nat_src;
	x->nat_dst = nv->nat_dst;
	x->nat_sport = nv->nat_sport;
	x->nat_dport = nv->nat_dport;
	return 1;
}

// ---- Routed IPv6 (FP_F_ROUTED6) ------------------------------------------------------
//
// A frame to the router's MAC that vswitchd routed (l3::decide6) between bridges,
// cached in fp_route6 under its L2 key plus the IPv6 destination; the action is an
// fp_action. Rewritten as l3::rewrite6 does: both MACs, hop limit - 1 (IPv6 has no
// header checksum and the L4 checksums do not cover the hop limit). The socket
// filter's hit leaves the destination it matched in fp6_verdicts, so fp_tc only
// follows the verdict for that very frame. Frames a routed entry may not take go up:
// hop limit <= 1 (time exceeded), extension headers (hop-by-hop, routing, fragment,
// ...: only TCP, UDP and ICMPv6 right after the header), over the egress MTU (packet
// too big), multicast/link-local/unspecified/loopback source or destination.

#define FP_MAX_ROUTE6 16384
#define IP6_OFF ETH_HLEN
#define IP6_HLIM_OFF (IP6_OFF + 7)
#define IP6_DST_OFF (IP6_OFF + 24)

struct fp6_key {
	__u32 ifindex;
	__u16 vid;
	__u8 src[6];
	__u8 dst[6]; // the router's MAC
	__u16 pad;
	__u8 ip6_dst[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FP_MAX_ROUTE6);
	__type(key, struct fp6_key);
	__type(value, struct fp_action);
} fp_route6 SEC(".maps");

struct fp6_verdict {
	__u8 ip6_dst[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp6_verdict);
} fp6_verdicts SEC(".maps");

// Addresses a router never forwards as plain unicast: multicast (ff00::/8), link-local
// (fe80::/10), and ::/120 (unspecified, loopback).
static __always_inline int fp6_special(const __u8 *a)
{
	__u8 hi = 0;

	if (a[0] == 0xff || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80))
		return 1;
#pragma unroll
	for (int i = 0; i < 15; i++)
		hi |= a[i];
	return hi == 0;
}

// Whether the IPv6 frame in `skb` may take a routed entry with egress MTU `mtu`
// (fp_routed_ok's IPv6 twin: what l3::decide6 forwards without a word).
static __always_inline int fp6_ok(struct __sk_buff *skb, __u16 mtu)
{
	__u8 h[40];
	__u32 seg, hdrs;

	if (bpf_skb_load_bytes(skb, IP6_OFF, h, sizeof(h)) < 0)
		return 0;
	if ((h[0] >> 4) != 6)
		return 0;
	if (h[6] != 6 && h[6] != 17 && h[6] != 58) // extension headers go up
		return 0;
	if (h[7] <= 1) // hop limit
		return 0;
	if (fp6_special(h + 8) || fp6_special(h + 24))
		return 0;
	if (!skb->gso_size) {
		seg = 40 + ((__u32)h[4] << 8 | h[5]);
	} else {
		if (h[6] == 6) {
			__u8 doff;

			if (bpf_skb_load_bytes(skb, IP6_OFF + 40 + 12, &doff, 1) < 0)
				return 0;
			hdrs = 40 + (__u32)(doff >> 4) * 4;
		} else if (h[6] == 17) {
			hdrs = 40 + 8;
		} else {
			return 0;
		}
		seg = hdrs + skb->gso_size;
	}
	return seg <= mtu;
}

// The live routed IPv6 entry for the frame whose L2 key is `k` (which missed fp_flows),
// counted as hit; its IPv6 destination in `dst`. NULL: the frame goes up.
static __always_inline struct fp_action *fp6_find(struct __sk_buff *skb, const struct fp_key *k,
						  __u32 len, __u8 *dst)
{
	__u32 zero = 0;
	struct fp6_key k6;
	struct fp_action *a;
	__be16 proto;
	__u64 *gen;

	if (k->vid || k->ip_dst || bpf_skb_load_bytes(skb, 12, &proto, 2) < 0 ||
	    proto != bpf_htons(ETH_P_IPV6))
		return 0;
	k6.ifindex = k->ifindex;
	k6.vid = 0;
	__builtin_memcpy(k6.src, k->src, 6);
	__builtin_memcpy(k6.dst, k->dst, 6);
	k6.pad = 0;
	if (bpf_skb_load_bytes(skb, IP6_DST_OFF, k6.ip6_dst, 16) < 0)
		return 0;
	a = bpf_map_lookup_elem(&fp_route6, &k6);
	if (!a)
		return 0;
	gen = bpf_map_lookup_elem(&fp_gen, &zero);
	if (!gen || a->gen != *gen)
		return 0;
	if (!(a->flags & FP_F_ROUTED6) || !fp6_ok(skb, a->mtu))
		return 0;
	__sync_fetch_and_add(&a->packets, 1);
	__sync_fetch_and_add(&a->bytes, len);
	a->last_hit = bpf_ktime_get_coarse_ns();
	__builtin_memcpy(dst, k6.ip6_dst, 16);
	return a;
}

// fp_sock's routed IPv6 lookup for a frame that missed everything else: on a hit, the
// verdict (`v`, and the destination in fp6_verdicts) for fp_tc; true when hidden.
static __always_inline int fp6_sock(struct __sk_buff *skb, struct fp_verdict *v)
{
	__u32 zero = 0;
	struct fp6_verdict *x = bpf_map_lookup_elem(&fp6_verdicts, &zero);
	struct fp_action *a;

	if (!x)
		return 0;
	a = fp6_find(skb, &v->key, fp_len(skb), x->ip6_dst);
	if (!a)
		return 0;
	v->state = FP_V_HIT;
	v->out_ifindex = a->out_ifindex;
	v->in_slot = a->in_slot;
	v->out_slot = a->out_slot;
	v->push_vid = a->push_vid;
	v->flags = a->flags;
	__builtin_memcpy(v->new_dst, a->new_dst, 6);
	__builtin_memcpy(v->new_src, a->new_src, 6);
	return 1;
}

// fp_tc taking fp_sock's routed IPv6 verdict: only for a frame with the destination
// the verdict was made for.
static __always_inline int fp6_take(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct fp6_verdict *x = bpf_map_lookup_elem(&fp6_verdicts, &zero);
	__u8 d[16];
	int diff = 0;

	if (!x || bpf_skb_load_bytes(skb, IP6_DST_OFF, d, 16) < 0)
		return 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		diff |= d[i] != x->ip6_dst[i];
	return !diff;
}

// Rewrite a routed IPv6 frame (l3::rewrite6): both MACs, hop limit - 1. No header
// checksum; BPF_F_RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE skb->csum right.
static __always_inline int fp6_rewrite(struct __sk_buff *skb, const __u8 *new_dst,
				       const __u8 *new_src)
{
	__u8 macs[12];
	__u8 hl;

	__builtin_memcpy(macs, new_dst, 6);
	__builtin_memcpy(macs + 6, new_src, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) < 0)
		return -1;
	if (bpf_skb_load_bytes(skb, IP6_HLIM_OFF, &hl, 1) < 0)
		return -1;
	hl -= 1;
	return bpf_skb_store_bytes(skb, IP6_HLIM_OFF, &hl, 1, BPF_F_RECOMPUTE_CSUM);
}

SEC("socket")
int fp_sock(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct fp_verdict *v = bpf_map_lookup_elem(&fp_verdicts, &zero);
	struct fp_action *a;

	if (!v)
		return -1;
	if (!fp_make_key(skb, &v->key)) {
		v->state = FP_V_NONE;
		return -1;
	}
	a = fp_lookup(skb, &v->key, fp_len(skb));
	if (!a) {
		if (fp_nat_sock(skb, v))
			return 0; // translated and forwarded by fp_tc
		if (fp6_sock(skb, v))
			return 0; // routed (IPv6) by fp_tc
		v->state = FP_V_MISS;
		return -1; // the whole frame to vswitchd
	}
	v->state = FP_V_HIT;
	v->out_ifindex = a->out_ifindex;
	v->in_slot = a->in_slot;
	v->out_slot = a->out_slot;
	v->push_vid = a->push_vid;
	v->flags = a->flags;
	__builtin_memcpy(v->new_dst, a->new_dst, 6);
	__builtin_memcpy(v->new_src, a->new_src, 6);
	return 0; // forwarded by fp_tc: vswitchd must not see it
}

static __always_inline void fp_count(__u32 slot, int rx, __u32 len)
{
	struct fp_port_stats *s = bpf_map_lookup_elem(&fp_stats, &slot);

	if (!s)
		return;
	// Per-CPU: no other CPU writes this copy.
	if (rx) {
		s->rx_packets += 1;
		s->rx_bytes += len;
	} else {
		s->tx_packets += 1;
		s->tx_bytes += len;
	}
}

// Rewrite a routed frame as vswitchd's router does (l3::rewrite): destination MAC =
// the next hop, source MAC = the router on the egress bridge, TTL - 1 with the header
// checksum updated incrementally (RFC 1624 eqn. 3, which bpf_l3_csum_replace applies
// to the 16-bit word holding TTL and protocol). The ones'-complement sum of the IP
// header is unchanged by the pair, so a CHECKSUM_COMPLETE value stays right, and the
// L4 checksum does not cover the TTL (GSO segments inherit the new header).
static __always_inline int fp_route_rewrite(struct __sk_buff *skb, const __u8 *new_dst,
					    const __u8 *new_src)
{
	__u8 macs[12];
	__u8 w[2];
	__u16 old, new;

	__builtin_memcpy(macs, new_dst, 6);
	__builtin_memcpy(macs + 6, new_src, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) < 0)
		return -1;
	if (bpf_skb_load_bytes(skb, IP_TTL_OFF, w, 2) < 0)
		return -1;
	__builtin_memcpy(&old, w, 2);
	w[0] -= 1;
	__builtin_memcpy(&new, w, 2);
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, IP_TTL_OFF, w, 1, 0);
}

static __always_inline int fp_keys_equal(const struct fp_key *a, const struct fp_key *b)
{
	int diff = a->ifindex != b->ifindex || a->vid != b->vid || a->ip_dst != b->ip_dst;

	// Byte by byte: clang turns memcmp into a library call, which BPF cannot make.
#pragma unroll
	for (int i = 0; i < 6; i++)
		diff |= (a->src[i] != b->src[i]) | (a->dst[i] != b->dst[i]);
	return !diff;
}

// ---- VXLAN (FP_F_TUNNEL): docs/architecture.md "Kernel fast path", VXLAN ----
//
// A remote VTEP is a port without an ifindex: keys name it by FP_TUN_IFINDEX | slot.

#define FP_TUN_IFINDEX 0x80000000u
#define FP_TUN_HLEN 14 // the slow-path header fp_tun_up puts in front of a decap miss
#define FP_TUN_ETHERTYPE 0x88b5 // IEEE 802 local experimental

// Tunnel parameters of a remote VTEP port, by its slot (written by vswitchd at attach).
struct fp_tun_port {
	__u32 vni;
	__u32 remote; // IPv4, host byte order (as struct bpf_tunnel_key has it)
	__u32 local;
	__u32 valid;
};

struct fp_tun_remote {
	__u32 vni;
	__u32 remote; // host byte order
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FP_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct fp_tun_port);
} fp_tun_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_MAX_SLOTS);
	__type(key, struct fp_tun_remote);
	__type(value, __u32); // slot of the remote VTEP port
} fp_tun_remotes SEC(".maps");

// ifindex of the slow-path TAP per external device: key = the device's ifindex.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} fp_tun_chan SEC(".maps");

// Set the tunnel key of the remote VTEP port in `slot` on `skb`, which is then
// redirected into the external VXLAN device. As vswitchd's own sender sockets: TTL 0
// (the route's default), TOS 0, DF clear, UDP checksum on.
static __always_inline int fp_tun_encap(struct __sk_buff *skb, __u32 slot)
{
	struct fp_tun_port *t = bpf_map_lookup_elem(&fp_tun_ports, &slot);
	struct bpf_tunnel_key key = {};

	if (!t || !t->valid)
		return -1;
	key.tunnel_id = t->vni;
	key.remote_ipv4 = t->remote;
	key.local_ipv4 = t->local;
	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0);
}

// A decap miss to vswitchd: FP_TUN_HLEN bytes in front of the inner frame (read by
// switch/src/port/vxlan.rs, `KernelRx`):
//   0: 0x02  1: inner tag (0 none, 1 802.1Q, 2 802.1ad)  2-3: its TCI
//   4-7: VNI  8-11: remote IPv4  12-13: FP_TUN_ETHERTYPE   (big-endian)
// The tag the kernel took out of the inner frame goes into the header (a TAP would
// write it at byte 12 of what it sends, inside the header).
static __always_inline int fp_tun_up(struct __sk_buff *skb, const struct bpf_tunnel_key *tk)
{
	__u32 dev = skb->ifindex;
	__u32 *chan = bpf_map_lookup_elem(&fp_tun_chan, &dev);
	__u8 h[FP_TUN_HLEN] = {};
	__u32 vni = tk->tunnel_id, remote = tk->remote_ipv4;

	if (!chan)
		return TC_ACT_SHOT;
	h[0] = 0x02;
	if (skb->vlan_present) {
		h[1] = skb->vlan_proto == bpf_htons(ETH_P_8021Q) ? 1 : 2;
		h[2] = skb->vlan_tci >> 8;
		h[3] = skb->vlan_tci & 0xff;
		if (bpf_skb_vlan_pop(skb) < 0)
			return TC_ACT_SHOT;
	}
	h[4] = vni >> 24;
	h[5] = vni >> 16;
	h[6] = vni >> 8;
	h[7] = vni;
	h[8] = remote >> 24;
	h[9] = remote >> 16;
	h[10] = remote >> 8;
	h[11] = remote;
	h[12] = FP_TUN_ETHERTYPE >> 8;
	h[13] = FP_TUN_ETHERTYPE & 0xff;
	if (bpf_skb_change_head(skb, FP_TUN_HLEN, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, h, sizeof(h), 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(*chan, 0);
}

// tcx ingress of the external VXLAN device: frames the kernel decapsulated, with their
// tunnel metadata. A hit is forwarded like fp_tc forwards one; everything else goes
// up to vswitchd through the slow-path TAP.
SEC("classifier")
int fp_tun_rx(struct __sk_buff *skb)
{
	struct bpf_tunnel_key tk = {};
	struct fp_tun_remote rk = {};
	struct fp_key k = {};
	struct fp_action *a;
	__u32 *slot, len, out_ifindex, in_slot, out_slot;
	__u16 push_vid, flags;
	__u8 new_dst[6], new_src[6];

	if (bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0) < 0)
		return TC_ACT_SHOT;
	rk.vni = tk.tunnel_id;
	rk.remote = tk.remote_ipv4;
	slot = bpf_map_lookup_elem(&fp_tun_remotes, &rk);
	if (!slot || !fp_make_key(skb, &k))
		return fp_tun_up(skb, &tk);
	k.ifindex = FP_TUN_IFINDEX | *slot;
	len = fp_len(skb);
	a = fp_lookup(skb, &k, len);
	if (!a || (a->flags & FP_F_TUNNEL))
		return fp_tun_up(skb, &tk);
	out_ifindex = a->out_ifindex;
	in_slot = a->in_slot;
	out_slot = a->out_slot;
	push_vid = a->push_vid;
	flags = a->flags;
	__builtin_memcpy(new_dst, a->new_dst, 6);
	__builtin_memcpy(new_src, a->new_src, 6);
	fp_count(in_slot, 1, len);
	if (skb->vlan_present && bpf_skb_vlan_pop(skb) < 0)
		return TC_ACT_SHOT;
	if ((flags & FP_F_ROUTED) && fp_route_rewrite(skb, new_dst, new_src) < 0)
		return TC_ACT_SHOT;
	if (push_vid && bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), push_vid) < 0)
		return TC_ACT_SHOT;
	fp_count(out_slot, 0, skb->len + (push_vid ? 4 : 0));
	if (flags & FP_F_PEER)
		return bpf_redirect_peer(out_ifindex, 0);
	return bpf_redirect(out_ifindex, (flags & FP_F_INGRESS) ? BPF_F_INGRESS : 0);
}

// What a hit does to the frame, taken from an entry (fp_action, fp_nat_action) or from
// fp_sock's verdict: the one shape fp_forward carries out.
struct fp_fwd {
	__u32 out_ifindex;
	__u16 in_slot;
	__u16 out_slot;
	__u16 push_vid;
	__u16 flags;
	__u8 new_dst[6];
	__u8 new_src[6];
};

#define FP_FWD_FROM(f, a)                                       \
	do {                                                    \
		(f)->out_ifindex = (a)->out_ifindex;            \
		(f)->in_slot = (a)->in_slot;                    \
		(f)->out_slot = (a)->out_slot;                  \
		(f)->push_vid = (a)->push_vid;                  \
		(f)->flags = (a)->flags;                        \
		__builtin_memcpy((f)->new_dst, (a)->new_dst, 6); \
		__builtin_memcpy((f)->new_src, (a)->new_src, 6); \
	} while (0)

// Look the frame (L2 key `k`, ip_dst 0) up by itself, without a socket filter's
// verdict: its L2 entry, else its routed IPv4 entry, else an established NAT flow
// (the translation in `x`), else its routed IPv6 entry. True on a hit (counted in
// the entry), with what to do in `f`.
static __always_inline int fp_find(struct __sk_buff *skb, struct fp_key *k, __u32 len,
				   struct fp_fwd *f, struct fp_nat_verdict *x)
{
	struct fp_action *a = fp_lookup(skb, k, len);
	struct fp_nat_action *na;
	__u8 d6[16];

	if (a) {
		FP_FWD_FROM(f, a);
		return 1;
	}
	na = fp_nat_find(skb, k, len, x);
	if (na) {
		FP_FWD_FROM(f, na);
		return 1;
	}
	a = fp6_find(skb, k, len, d6);
	if (a) {
		FP_FWD_FROM(f, a);
		return 1;
	}
	return 0;
}

// Carry out a hit (`f`; FP_F_NAT: the translation in `x`): count it, egress VLAN,
// rewrite, tunnel key, redirect. `at_egress`: the program runs at tc egress
// (fp_tap_out), where bpf_redirect_peer cannot work (it drops the frame outside tc
// ingress), so FP_F_PEER is never honoured there, whatever the entry says.
static __always_inline int fp_forward(struct __sk_buff *skb, const struct fp_fwd *f, __u32 len,
				      const struct fp_nat_verdict *x, int at_egress)
{
	fp_count(f->in_slot, 1, len);
	// Egress VLAN exactly as vswitchd does it: the received tag goes, the output
	// port's tag (if any) is pushed with priority 0.
	if (skb->vlan_present && bpf_skb_vlan_pop(skb) < 0)
		return TC_ACT_SHOT;
	if ((f->flags & FP_F_ROUTED) && fp_route_rewrite(skb, f->new_dst, f->new_src) < 0)
		return TC_ACT_SHOT;
	if ((f->flags & FP_F_NAT) && fp_nat_rewrite(skb, x) < 0)
		return TC_ACT_SHOT;
	if ((f->flags & FP_F_ROUTED6) && fp6_rewrite(skb, f->new_dst, f->new_src) < 0)
		return TC_ACT_SHOT;
	if (f->push_vid && bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), f->push_vid) < 0)
		return TC_ACT_SHOT;
	fp_count(f->out_slot, 0, skb->len + (f->push_vid ? 4 : 0));
	if ((f->flags & FP_F_TUNNEL) && fp_tun_encap(skb, f->out_slot) < 0)
		return TC_ACT_SHOT;
	if ((f->flags & FP_F_PEER) && !at_egress)
		return bpf_redirect_peer(f->out_ifindex, 0);
	// FP_F_INGRESS: into an internal port's host side, as if the host had received
	// the frame on its TAP (vswitchd's write to the TAP fd does the same).
	return bpf_redirect(f->out_ifindex, (f->flags & FP_F_INGRESS) ? BPF_F_INGRESS : 0);
}

SEC("classifier")
int fp_tc(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct fp_verdict *v = bpf_map_lookup_elem(&fp_verdicts, &zero);
	struct fp_key k = {};
	struct fp_fwd f = {};
	__u32 len;
	struct fp_nat_verdict x = {}; // FP_F_NAT: the tuple matched and its translation
	int have = 0, state = FP_V_NONE;

	if (!v)
		return TC_ACT_OK;
	if (!fp_make_key(skb, &k)) {
		v->state = FP_V_NONE;
		return TC_ACT_OK;
	}
	len = fp_len(skb);
	// The socket filter's key has the IPv4 destination when it looked for a routed
	// entry: compare like with like.
	if (v->state != FP_V_NONE && v->key.ip_dst &&
	    bpf_skb_load_bytes(skb, IP_OFF + 16, &k.ip_dst, 4) < 0)
		k.ip_dst = 0;
	if (v->state != FP_V_NONE && fp_keys_equal(&v->key, &k) &&
	    (v->state != FP_V_HIT || !(v->flags & FP_F_NAT) || fp_nat_take(skb, &k, &x)) &&
	    (v->state != FP_V_HIT || !(v->flags & FP_F_ROUTED6) || fp6_take(skb))) {
		// The socket filter saw this frame a moment ago: do what it decided.
		state = v->state;
		FP_FWD_FROM(&f, v);
		have = 1;
	}
	v->state = FP_V_NONE;
	if (!have) {
		k.ip_dst = 0;
		if (!fp_find(skb, &k, len, &f, &x))
			return TC_ACT_OK;
		state = FP_V_HIT;
	}
	if (state != FP_V_HIT)
		return TC_ACT_OK;
	return fp_forward(skb, &f, len, &x, 0);
}

// vswitchd's own network namespace, as its netns cookie: written once by
// fp_netns_probe when vswitchd loads the object (0: unknown, no check).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fp_netns SEC(".maps");

// tcx egress of an `internal` port's TAP: what the host sends on it leaves through
// here before tun_net_xmit queues it for vswitchd's TAP fd. No socket filter sees
// these frames first, so this program alone decides, with one lookup: a hit is
// redirected and never reaches the fd, a miss (TC_ACT_OK) goes on to vswitchd as
// without the fast path. It never reads or clears fp_sock's per-CPU verdicts.
//
// `netns_check`: a frame sent by a socket of another namespace than vswitchd's means
// the TAP was moved there (`ip link set vsint0 netns X`; the link stays attached, and
// bpf_redirect would resolve the entry's ifindex as X numbers it) and vswitchd has not
// noticed yet: it goes to vswitchd's fd. bpf_get_netns_cookie(skb) in tc is the
// socket's namespace (init_net's without one), so frames without a socket (ARP
// replies, forwarded) are not covered. Passing a frame up is always right.
static __always_inline int fp_tap_out_body(struct __sk_buff *skb, int netns_check)
{
	struct fp_key k = {};
	struct fp_fwd f = {};
	struct fp_nat_verdict x = {};
	__u32 len;

	if (netns_check && skb->sk) {
		__u32 zero = 0;
		__u64 *own = bpf_map_lookup_elem(&fp_netns, &zero);

		if (own && *own && bpf_get_netns_cookie(skb) != *own)
			return TC_ACT_OK;
	}
	if (!fp_make_key(skb, &k))
		return TC_ACT_OK;
	len = fp_len(skb);
	if (!fp_find(skb, &k, len, &f, &x))
		return TC_ACT_OK;
	return fp_forward(skb, &f, len, &x, 1);
}

SEC("classifier")
int fp_tap_out(struct __sk_buff *skb)
{
	return fp_tap_out_body(skb, 1);
}

// fp_tap_out for kernels whose tc programs lack bpf_get_netns_cookie (before 6.15):
// loaded only if fp_tap_out is refused.
SEC("classifier")
int fp_tap_out_nc(struct __sk_buff *skb)
{
	return fp_tap_out_body(skb, 0);
}

// Run once by vswitchd with BPF_PROG_TEST_RUN, whose skb carries a socket of the
// caller's namespace: records vswitchd's netns cookie in fp_netns.
SEC("classifier")
int fp_netns_probe(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u64 c = bpf_get_netns_cookie(skb);

	bpf_map_update_elem(&fp_netns, &zero, &c, BPF_ANY);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Apache-2.0";
