/**
 * Device hooks by TC: packet.bpf.c's hop_tc_ingress and hop_tc_egress attached with
 * tcx links (kernel >= 6.6) to every device of every owned namespace.
 *
 * A device tracepoint runs the agent's program for every packet on every device of
 * the machine, and the program then throws away what is outside the owned
 * namespaces. A tcx link runs it only on the devices it is attached to, and its call
 * costs less than a tracepoint's. The price is bookkeeping: devices come and go, so
 * sync() is called again periodically (with the owned namespaces' re-resolution), attaches
 * to new devices and closes the links of devices that are gone. A link is a file
 * descriptor of this process: nothing outlives it (no qdisc, no filter left behind).
 *
 * An ifindex means something only inside its namespace, and both listing the devices
 * (if_nameindex) and BPF_LINK_CREATE read it in the calling thread's namespace. So
 * sync() moves this thread into each namespace with setns() and back before it
 * returns. Everything between the two setns() calls is synchronous: no I/O callback
 * can run, and no socket is opened, while the thread is elsewhere.
 */
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';
import { bindings, BPF_TCX_EGRESS, BPF_TCX_INGRESS, CLONE_NEWNET, lastErrno } from './libbpf.js';
import { LiveError } from './errors.js';

/** An ingress and an egress fd: the two programs, or one device's two links. */
export interface TcxPrograms {
  ingress: number;
  egress: number;
}

/** A namespace to attach in: its nsfs path and inode. */
export interface TcxNamespace {
  path: string;
  inode: number;
}

export interface TcxSyncResult {
  /** Devices or namespaces that could not be attached, with why (retried on the next sync). */
  failed: string[];
}

export interface DeviceLinks {
  /** Links devices of `namespaces` not yet linked; closes links of devices (or namespaces) no longer there. */
  sync(namespaces: readonly TcxNamespace[]): TcxSyncResult;
  /** Devices with both links. */
  devices(): number;
  close(): void;
}

/** Names and indexes of the devices in the calling thread's namespace. */
function devicesHere(): Map<number, string> {
  const { libc } = bindings();
  const list = libc.if_nameindex();
  if (!list) throw new Error(`if_nameindex failed (errno ${lastErrno()})`);
  const out = new Map<number, string>();
  try {
    // struct if_nameindex { unsigned int if_index; char *if_name; }: 16 bytes on 64-bit.
    for (let off = 0; ; off += 16) {
      const index = koffi.decode(list, off, 'uint32') as number;
      if (!index) break;
      out.set(index, koffi.decode(list, off + 8, 'const char *') as string);
    }
  } finally {
    libc.if_freenameindex(list);
  }
  return out;
}

export function createDeviceLinks(progs: TcxPrograms): DeviceLinks {
  const { bpf, libc } = bindings();
  // key `${inode}/${ifindex}/${name}`: a device renamed or replaced under the same index is linked again
  const links = new Map<string, TcxPrograms>();
  const closeLinked = (l: TcxPrograms): void => {
    closeSync(l.ingress);
    closeSync(l.egress);
  };

  const linkDevice = (ifindex: number): TcxPrograms => {
    const ingress = bpf.bpf_link_create(progs.ingress, ifindex, BPF_TCX_INGRESS, null);
    if (ingress < 0) throw new Error(`tcx ingress link failed (errno ${-ingress})`);
    const egress = bpf.bpf_link_create(progs.egress, ifindex, BPF_TCX_EGRESS, null);
    if (egress < 0) {
      closeSync(ingress);
      throw new Error(`tcx egress link failed (errno ${-egress})`);
    }
    return { ingress, egress };
  };

  return {
    sync(namespaces) {
      const result: TcxSyncResult = { failed: [] };
      const seen = new Set<string>();
      const home = openSync('/proc/thread-self/ns/net', 'r');
      try {
        for (const ns of namespaces) {
          let fd: number;
          try {
            fd = openSync(ns.path, 'r');
          } catch (err) {
            result.failed.push(`${ns.path}: ${(err as Error).message}`);
            continue;
          }
          try {
            if (libc.setns(fd, CLONE_NEWNET) !== 0) {
              result.failed.push(`${ns.path}: setns failed (errno ${lastErrno()})`);
              continue;
            }
            for (const [ifindex, name] of devicesHere()) {
              const key = `${ns.inode}/${ifindex}/${name}`;
              seen.add(key);
              if (links.has(key)) continue;
              try {
                links.set(key, linkDevice(ifindex));
              } catch (err) {
                result.failed.push(`${ns.path} ${name}: ${(err as Error).message}`);
              }
            }
          } finally {
            closeSync(fd);
          }
        }
      } finally {
        if (libc.setns(home, CLONE_NEWNET) !== 0) {
          // This thread would open Kafka and HTTP sockets in an owned namespace: never go on.
          throw new LiveError('HOP_LIVE_ATTACH_FAILED', `cannot return to the agent's own network namespace (errno ${lastErrno()})`);
        }
        closeSync(home);
      }
      for (const [key, l] of links) {
        if (seen.has(key)) continue;
        closeLinked(l);
        links.delete(key);
      }
      return result;
    },
    devices: () => links.size,
    close() {
      for (const l of links.values()) closeLinked(l);
      links.clear();
    },
  };
}
