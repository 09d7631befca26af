#!/usr/bin/env python3
"""A slow wire: forwards Ethernet frames from one interface to another after a delay,
dropping a fraction of them (netem's delay/jitter/loss, in user space).

The lab's kernel has no netem (nor fq for EDT pacing), so each inter-node link runs
through a small "wire" namespace: normally a tc mirred redirect forwards frames in the
kernel; while a link has a delay or loss, this process forwards that direction instead.
Seen from the nodes, the time is spent on the link itself: after the sender's
net_dev_start_xmit and before the receiver's netif_receive_skb, as with netem on a
real wire.

PACKET_VNET_HDR on both sockets carries GSO/checksum metadata across, so a large GSO
frame leaves as the same GSO frame instead of failing with EMSGSIZE.
"""
import argparse
import heapq
import json
import random
import select
import signal
import socket
import sys
import time

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def log(**fields):
    sys.stdout.write(json.dumps({"t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


def packet_socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.bind((iface, 0))
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--in", dest="rx", required=True, help="interface frames arrive on")
    ap.add_argument("--out", dest="tx", required=True, help="interface frames leave by")
    ap.add_argument("--delay-us", type=int, default=0)
    ap.add_argument("--jitter-us", type=int, default=0)
    ap.add_argument("--loss-pct", type=float, default=0.0)
    ap.add_argument("--name", default="wire")
    a = ap.parse_args()

    rx = packet_socket(a.rx)
    try:
        rx.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass  # older kernel: outgoing frames are skipped by pkttype below
    rx.setblocking(False)
    tx = packet_socket(a.tx)
    # The receive side of tx is never read: keep it from buffering.
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    delay = a.delay_us / 1e6
    jitter = a.jitter_us / 1e6
    loss = a.loss_pct / 100.0
    queue = []  # (release time, sequence, frame)
    seq = 0
    stats = {"received": 0, "forwarded": 0, "lost": 0, "errors": 0}
    stopping = [False]

    def stop(*_):
        stopping[0] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(event="ready", name=a.name, rx=a.rx, tx=a.tx, delayUs=a.delay_us, jitterUs=a.jitter_us, lossPct=a.loss_pct)

    while not (stopping[0] and not queue):
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, frame = heapq.heappop(queue)
            try:
                tx.send(frame)
                stats["forwarded"] += 1
            except OSError:
                stats["errors"] += 1
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.5
        if stopping[0]:
            # Draining: deliver what is in flight, take nothing new.
            time.sleep(min(timeout, 0.05))
            continue
        try:
            ready, _, _ = select.select([rx], [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            continue
        while True:
            try:
                frame, addr = rx.recvfrom(262144)
            except BlockingIOError:
                break
            except InterruptedError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            stats["received"] += 1
            if loss > 0 and random.random() < loss:
                stats["lost"] += 1
                continue
            extra = random.uniform(-jitter, jitter) if jitter > 0 else 0.0
            seq += 1
            heapq.heappush(queue, (time.monotonic() + max(0.0, delay + extra), seq, frame))
    log(event="stopped", name=a.name, **stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
