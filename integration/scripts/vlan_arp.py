#!/usr/bin/env python3
"""Send an 802.1Q-tagged ARP request on IFACE and wait for the (tagged) reply.

Used by the trunk test where the kernel has no 8021q module: it plays a VLAN-aware
host on a trunk port. Prints the VLAN id the reply carried and exits 0, or exits 1
after the timeout. Usage: vlan_arp.py IFACE VID SENDER_IP TARGET_IP
"""
import socket, struct, sys, time

iface, vid, spa, tpa = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
SOL_PACKET, PACKET_AUXDATA = 263, 8
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
s.bind((iface, 0))
mac = open(f"/sys/class/net/{iface}/address").read().strip()
sha = bytes.fromhex(mac.replace(":", ""))
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
        tci = None
        for level, ty, blob in anc:
            if level == SOL_PACKET and ty == PACKET_AUXDATA and len(blob) >= 20:
                status, _, _, _, _, vtci, _ = struct.unpack("IIIHHHH", blob[:20])
                if status & 0x10 or vtci:
                    tci = vtci & 0x0FFF
        et = struct.unpack("!H", data[12:14])[0]
        body = data[14:]
        if et == 0x8100:
            tci = struct.unpack("!H", data[14:16])[0] & 0x0FFF
            et = struct.unpack("!H", data[16:18])[0]
            body = data[18:]
        if et == 0x0806 and len(body) >= 28:
            op = struct.unpack("!H", body[6:8])[0]
            if op == 2 and body[14:18] == socket.inet_aton(tpa):
                print(tci)
                sys.exit(0)
sys.exit(1)
