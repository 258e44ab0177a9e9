#!/usr/bin/env python3
"""Bounded frame floods from one interface, for the robustness tests.

flood.py IFACE KIND COUNT [SECONDS [DST_MAC]]
  macs   broadcast frames from COUNT random source MACs
  arp    ARP requests for 10.0.0.1 from random MACs/addresses (the router punt path)
  junk   malformed frames (to DST_MAC, default broadcast): runts, bad IHL, bad total
         length, stacked VLAN tags, truncated tags, cut fragments
  dhcp   DHCP starvation from COUNT random client MACs: REQUESTs for the addresses from
         $FLOOD_POOL (default 10.0.0.100) up, alternating with DISCOVERs
  flows  UDP datagrams to DST_MAC (the router) from $FLOOD_SRC to $FLOOD_DST:9, each
         from another source port (new conntrack entries), sent from the interface's
         own MAC
  scan   UDP datagrams to DST_MAC (the router) from $FLOOD_SRC to random addresses
         in 10.1.0.0/16 (every one a neighbour the router must resolve)
Stops after COUNT frames or SECONDS (default 30), whichever first; prints frames sent.
"""
import os, random, socket, struct, sys, time

import pktlib  # beside this script (its directory is on sys.path)
from pktlib import ipv4_udp

iface, kind, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
limit = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
dst = bytes.fromhex(sys.argv[5].replace(":", "")) if len(sys.argv) > 5 else b"\xff" * 6
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
rnd = random.Random(42)

def rmac():
    return pktlib.rmac(rnd)

own = s.getsockname()
own_mac = open("/sys/class/net/%s/address" % iface).read().strip()
own_mac = bytes.fromhex(own_mac.replace(":", ""))

def frame(i):
    if kind == "dhcp":
        mac = rmac()
        bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, rnd.getrandbits(32),
                            0, 0x8000, b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4,
                            mac + b"\0" * 10, b"\0" * 64, b"\0" * 128)
        if i % 2 == 0:
            base = struct.unpack("!I", socket.inet_aton(os.environ.get("FLOOD_POOL", "10.0.0.100")))[0]
            want = struct.pack("!I", base + (i // 2) % 64)
            opts = b"\x63\x82\x53\x63" + b"\x35\x01\x03" + b"\x32\x04" + want + b"\xff"
        else:
            opts = b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\xff"
        ip = ipv4_udp(b"\0" * 4, b"\xff" * 4, 68, 67, bootp + opts)
        return b"\xff" * 6 + mac + b"\x08\x00" + ip
    if kind == "scan":
        src = socket.inet_aton(os.environ["FLOOD_SRC"])
        dstip = bytes([10, 1, rnd.randrange(256), rnd.randrange(2, 255)])
        return dst + own_mac + b"\x08\x00" + ipv4_udp(src, dstip, 4000, 9, b"scan")
    if kind == "flows":
        src = socket.inet_aton(os.environ["FLOOD_SRC"])
        dstip = socket.inet_aton(os.environ["FLOOD_DST"])
        ip = ipv4_udp(src, dstip, 1024 + i % 64000, 9, b"flood")
        return dst + own_mac + b"\x08\x00" + ip
    if kind == "macs":
        return b"\xff" * 6 + rmac() + b"\x88\xb5" + b"flood" * 10
    if kind == "arp":
        src = rmac()
        spa = socket.inet_aton("10.0.%d.%d" % (rnd.randrange(256), rnd.randrange(1, 255)))
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, spa, b"\0" * 6,
                          socket.inet_aton("10.0.0.1"))
        return b"\xff" * 6 + src + b"\x08\x06" + arp
    # junk
    src = rmac()
    j = i % 6
    if j == 0:
        return src[:5]  # runt
    if j == 1:
        return dst + src + b"\x08\x00" + b"\x4f" + b"\0" * 30  # IHL 15, too short
    if j == 2:
        return dst + src + b"\x08\x00" + b"\x45\x00\xff\xff" + b"\0" * 30  # total len
    if j == 3:
        return dst + src + b"\x81\x00\x00\x0a\x81\x00\x00\x14\x08\x00" + b"\x45" + b"\0" * 40
    if j == 4:
        return dst + src + b"\x81\x00"  # truncated tag
    return dst + src + b"\x08\x00\x45\x00\x00\x1c\x00\x00\x20\x00\x40\x11"  # fragment, cut

sent = 0
end = time.time() + limit
while sent < count and time.time() < end:
    try:
        s.send(frame(sent))
    except OSError:
        pass
    sent += 1
print(sent)
