#!/usr/bin/env python3
"""Send an 802.1Q-tagged ARP request on IFACE and wait for the (tagged) reply.

Used by the trunk test where the kernel has no 8021q module: it plays a VLAN-aware
host on a trunk port. Prints the VLAN id the reply carried and exits 0, or exits 1
after the timeout. Usage: vlan_arp.py IFACE VID SENDER_IP TARGET_IP
"""
import socket, struct, sys, time

from pktlib import untag, vlan_socket  # beside this script (its directory is on sys.path)

iface, vid, spa, tpa = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s, sha = vlan_socket(iface)
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sha, socket.inet_aton(spa),
                  b"\0" * 6, socket.inet_aton(tpa))
frame = b"\xff" * 6 + sha + struct.pack("!HH", 0x8100, vid) + struct.pack("!H", 0x0806) + arp
s.settimeout(0.5)
deadline = time.time() + 5
while time.time() < deadline:
    s.send(frame)
    end = time.time() + 1
    while time.time() < end:
        try:
            data, anc, _, _ = s.recvmsg(2048, 1024)
        except socket.timeout:
            break
        tci, et, body = untag(data, anc)
        if et == 0x0806 and len(body) >= 28:
            op = struct.unpack("!H", body[6:8])[0]
            if op == 2 and body[14:18] == socket.inet_aton(tpa):
                print(tci)
                sys.exit(0)
sys.exit(1)
