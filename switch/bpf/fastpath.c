// SPDX-License-Identifier: Apache-2.0
//
// vswitch kernel fast path (switch/src/fastpath/ is the user-space half; read its
// module docs first).
//
// Two programs share one cache of decisions the userspace pipeline already made:
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
#define FP_F_TUNNEL 16 // out: VXLAN, tunnel key from fp_tun_ports[out_slot] (see fp_tun_encap)

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
static __always_inline int fp_routed_ok(struct __sk_buff *skb, const struct fp_action *a)
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
	return seg <= a->mtu;
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
		if (!a || !(a->flags & FP_F_ROUTED) || !fp_routed_ok(skb, a))
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

SEC("classifier")
int fp_tc(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct fp_verdict *v = bpf_map_lookup_elem(&fp_verdicts, &zero);
	struct fp_key k = {};
	__u32 out_ifindex, len, in_slot, out_slot;
	__u16 push_vid, flags;
	__u8 new_dst[6], new_src[6];
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
	if (v->state != FP_V_NONE && fp_keys_equal(&v->key, &k)) {
		// The socket filter saw this frame a moment ago: do what it decided.
		state = v->state;
		out_ifindex = v->out_ifindex;
		in_slot = v->in_slot;
		out_slot = v->out_slot;
		push_vid = v->push_vid;
		flags = v->flags;
		__builtin_memcpy(new_dst, v->new_dst, 6);
		__builtin_memcpy(new_src, v->new_src, 6);
		have = 1;
	}
	v->state = FP_V_NONE;
	if (!have) {
		struct fp_action *a;

		k.ip_dst = 0;
		a = fp_lookup(skb, &k, len);
		if (!a)
			return TC_ACT_OK;
		state = FP_V_HIT;
		out_ifindex = a->out_ifindex;
		in_slot = a->in_slot;
		out_slot = a->out_slot;
		push_vid = a->push_vid;
		flags = a->flags;
		__builtin_memcpy(new_dst, a->new_dst, 6);
		__builtin_memcpy(new_src, a->new_src, 6);
	}
	if (state != FP_V_HIT)
		return TC_ACT_OK;

	fp_count(in_slot, 1, len);
	// Egress VLAN exactly as vswitchd does it: the received tag goes, the output
	// port's tag (if any) is pushed with priority 0.
	if (skb->vlan_present && bpf_skb_vlan_pop(skb) < 0)
		return TC_ACT_SHOT;
	if ((flags & FP_F_ROUTED) && fp_route_rewrite(skb, new_dst, new_src) < 0)
		return TC_ACT_SHOT;
	if (push_vid && bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), push_vid) < 0)
		return TC_ACT_SHOT;
	fp_count(out_slot, 0, skb->len + (push_vid ? 4 : 0));
	if ((flags & FP_F_TUNNEL) && fp_tun_encap(skb, out_slot) < 0)
		return TC_ACT_SHOT;
	if (flags & FP_F_PEER)
		return bpf_redirect_peer(out_ifindex, 0);
	return bpf_redirect(out_ifindex, (flags & FP_F_INGRESS) ? BPF_F_INGRESS : 0);
}

char LICENSE[] SEC("license") = "Apache-2.0";
