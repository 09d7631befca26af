#!/usr/bin/env python3
"""Out-of-window segment injection (the incident of ARCHITECTURE.md), run in the client pod.

1. Opens a real TCP connection to the VIP and starts an upload (POST /upload, partial body),
   so the connection is established through node-lb's DNAT and the server pod's REDIRECT.
2. Reads the socket's exact sequence numbers with TCP_REPAIR (falls back to the capture),
   prints a "ready" line and waits for a line on stdin (the caller snapshots counters).
3. Sends, from a raw socket, one ACK segment on the same 4-tuple whose sequence number is
   --gap bytes past snd_nxt (far beyond any window) and whose ack number is the client's
   rcv_nxt, so that the RST it provokes carries exactly the sequence number the client
   accepts (RFC 5961 would otherwise turn it into a challenge ACK).
4. Waits for the outcome on the connection (ECONNRESET expected) and prints a "result"
   line with what it saw on the wire (AF_PACKET capture on the pod's interface).

Uses only the standard library: raw and packet sockets, no scapy needed.
"""
import argparse
import json
import os
import random
import socket
import struct
import sys
import threading
import time

TCP_REPAIR = 19
TCP_REPAIR_QUEUE = 20
TCP_QUEUE_SEQ = 21
TCP_RECV_QUEUE = 1
TCP_SEND_QUEUE = 2
TCP_REPAIR_ON = 1
TCP_REPAIR_OFF_NO_WP = -1
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
FLAG_NAMES = [(0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "A"), (0x20, "U")]


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def flags_str(f):
    return "".join(n for bit, n in FLAG_NAMES if f & bit) or "."


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_segment(src, dst, sport, dport, seq, ack, flags, window, payload):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(hdr) + len(payload))
    csum = checksum(pseudo + hdr + payload)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload


def ip_packet(src, dst, segment, ip_id):
    # The kernel fills the IP checksum for IPPROTO_RAW sockets.
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), ip_id, 0x4000, 64, socket.IPPROTO_TCP, 0, socket.inet_aton(src), socket.inet_aton(dst)) + segment


class Capture(threading.Thread):
    """TCP packets of one local port seen on an interface, both directions."""

    def __init__(self, iface, lport_ref):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((iface, 0))
        self.sock.settimeout(0.2)
        self.lport_ref = lport_ref
        self.packets = []
        self.stop = False

    def run(self):
        while not self.stop:
            try:
                frame, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(frame) < 34 or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != socket.IPPROTO_TCP or len(ip) < ihl + 20:
                continue
            total = struct.unpack("!H", ip[2:4])[0]
            tcp = ip[ihl:]
            sport, dport, seq, ack, off, fl = struct.unpack("!HHIIBB", tcp[:14])
            lport = self.lport_ref[0]
            if lport not in (sport, dport):
                continue
            self.packets.append({
                "t": time.time(),
                "dir": "out" if addr[2] == PACKET_OUTGOING else "in",
                "src": "%s:%d" % (socket.inet_ntoa(ip[12:16]), sport),
                "dst": "%s:%d" % (socket.inet_ntoa(ip[16:20]), dport),
                "flags": flags_str(fl),
                "seq": seq,
                "ack": ack,
                "len": total - ihl - (off >> 4) * 4,
                "ipId": struct.unpack("!H", ip[4:6])[0],
            })


def repair_seqs(sock):
    """(snd_nxt, rcv_nxt) of an established socket, exactly, or None without CAP_NET_ADMIN."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
    except OSError:
        return None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        snd = struct.unpack("I", sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        rcv = struct.unpack("I", sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
        return snd, rcv
    finally:
        # OFF_NO_WP: leave repair mode without sending a window probe.
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)


def captured_seqs(packets):
    snd = rcv = None
    for p in packets:
        if p["dir"] == "out":
            end = (p["seq"] + p["len"] + (1 if "S" in p["flags"] or "F" in p["flags"] else 0)) & 0xFFFFFFFF
            snd = end
            rcv = p["ack"] if "A" in p["flags"] else rcv
    return (snd, rcv) if snd is not None and rcv is not None else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dst", required=True)
    ap.add_argument("--dport", type=int, required=True)
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--gap", type=int, default=1 << 30, help="bytes past snd_nxt")
    ap.add_argument("--upload-bytes", type=int, default=16384)
    ap.add_argument("--wait", type=float, default=3.0, help="seconds to wait for the outcome")
    ap.add_argument("--no-wait-stdin", action="store_true")
    a = ap.parse_args()

    lport_ref = [0]
    cap = Capture(a.iface, lport_ref)
    cap.start()

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("0.0.0.0", 0))
    lport_ref[0] = s.getsockname()[1]
    s.connect((a.dst, a.dport))
    src_ip, sport = s.getsockname()
    head = ("POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (a.dst, 1 << 20)).encode()
    s.sendall(head + b"u" * a.upload_bytes)
    time.sleep(0.3)  # everything sent is acked; the connection is idle

    seqs = repair_seqs(s)
    source = "TCP_REPAIR"
    if seqs is None:
        seqs, source = captured_seqs(cap.packets), "capture"
    if seqs is None:
        emit({"event": "error", "error": "cannot learn the connection's sequence numbers"})
        return 1
    snd_nxt, rcv_nxt = seqs
    emit({"event": "ready", "src": src_ip, "sport": sport, "dst": a.dst, "dport": a.dport, "sndNxt": snd_nxt, "rcvNxt": rcv_nxt, "seqSource": source})
    if not a.no_wait_stdin:
        sys.stdin.readline()

    seq = (snd_nxt + a.gap) & 0xFFFFFFFF
    payload = b"hoptrace-oow"
    ip_id = random.randint(1, 0xFFFF)
    seg = tcp_segment(src_ip, a.dst, sport, a.dport, seq, rcv_nxt, 0x18, 502, payload)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    t_inject = time.time()
    raw.sendto(ip_packet(src_ip, a.dst, seg, ip_id), (a.dst, 0))
    raw.close()

    s.settimeout(a.wait)
    outcome = "STILL_OPEN"
    try:
        data = s.recv(4096)
        outcome = "DATA" if data else "EOF"
    except ConnectionResetError:
        outcome = "ECONNRESET"
    except socket.timeout:
        outcome = "STILL_OPEN"
    except OSError as e:
        outcome = os.strerror(e.errno) if e.errno else str(e)
    elapsed = (time.time() - t_inject) * 1000
    time.sleep(0.2)
    cap.stop = True
    cap.join(1)
    s.close()
    emit({
        "event": "result",
        "injected": {"src": "%s:%d" % (src_ip, sport), "dst": "%s:%d" % (a.dst, a.dport), "seq": seq, "ack": rcv_nxt, "flags": "PA", "len": len(payload), "ipId": ip_id, "t": t_inject},
        "clientOutcome": outcome,
        "outcomeAfterMs": round(elapsed, 3),
        "packets": cap.packets,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
