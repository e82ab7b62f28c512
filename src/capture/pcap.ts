/**
 * Classic libpcap file format (what tcpdump -w writes and every reader
 * opens): a 24-byte global header, then per frame a 16-byte record header
 * and the captured bytes. We write little-endian with the microsecond
 * magic and LINKTYPE_ETHERNET. No npm package is a small, maintained pcap
 * *writer* (`pcap` binds libpcap for live capture, `pcap-parser` only
 * reads), and the format is two structs, so they are written here.
 *
 * Each struct is described by a field table (offset, size); a check at load
 * time proves the fields tile the struct exactly, so a typo in an offset
 * cannot produce a silently corrupt file.
 */

/** Microsecond-resolution magic, written in our (little-endian) byte order. */
export const PCAP_MAGIC_USEC = 0xa1b2c3d4;
export const PCAP_VERSION_MAJOR = 2;
export const PCAP_VERSION_MINOR = 4;
/** IEEE 802.3 Ethernet (LINKTYPE_ETHERNET, DLT_EN10MB). */
export const LINKTYPE_ETHERNET = 1;
/** tcpdump's default snapshot length. */
export const DEFAULT_SNAPLEN = 262144;

interface Field {
  readonly off: number;
  readonly size: 4 | 2;
}

/** pcap_file_header (pcap/pcap.h). */
export const GLOBAL_HEADER = {
  magic: { off: 0, size: 4 },
  versionMajor: { off: 4, size: 2 },
  versionMinor: { off: 6, size: 2 },
  thiszone: { off: 8, size: 4 },
  sigfigs: { off: 12, size: 4 },
  snaplen: { off: 16, size: 4 },
  linktype: { off: 20, size: 4 },
} as const satisfies Record<string, Field>;
export const GLOBAL_HEADER_SIZE = 24;

/** pcap_sf_pkthdr: the on-disk record header (32-bit seconds, not struct timeval). */
export const RECORD_HEADER = {
  tsSec: { off: 0, size: 4 },
  tsUsec: { off: 4, size: 4 },
  inclLen: { off: 8, size: 4 },
  origLen: { off: 12, size: 4 },
} as const satisfies Record<string, Field>;
export const RECORD_HEADER_SIZE = 16;

/** Throws unless the fields cover [0, size) exactly, in order, without gaps or overlaps. */
export function checkLayout(name: string, fields: Record<string, Field>, size: number): void {
  let at = 0;
  for (const [k, f] of Object.entries(fields)) {
    if (f.off !== at) throw new Error(`${name}.${k} at offset ${f.off}, expected ${at}`);
    at += f.size;
  }
  if (at !== size) throw new Error(`${name} fields cover ${at} bytes, the struct is ${size}`);
}
checkLayout('pcap global header', GLOBAL_HEADER, GLOBAL_HEADER_SIZE);
checkLayout('pcap record header', RECORD_HEADER, RECORD_HEADER_SIZE);

/** Write the global header at buf[off]; returns the bytes written (24). */
export function writeGlobalHeader(buf: Buffer, off: number, snaplen: number, linktype = LINKTYPE_ETHERNET): number {
  const h = GLOBAL_HEADER;
  buf.writeUInt32LE(PCAP_MAGIC_USEC, off + h.magic.off);
  buf.writeUInt16LE(PCAP_VERSION_MAJOR, off + h.versionMajor.off);
  buf.writeUInt16LE(PCAP_VERSION_MINOR, off + h.versionMinor.off);
  buf.writeInt32LE(0, off + h.thiszone.off);
  buf.writeUInt32LE(0, off + h.sigfigs.off);
  buf.writeUInt32LE(snaplen, off + h.snaplen.off);
  buf.writeUInt32LE(linktype, off + h.linktype.off);
  return GLOBAL_HEADER_SIZE;
}

export function globalHeader(snaplen: number, linktype = LINKTYPE_ETHERNET): Buffer {
  const b = Buffer.alloc(GLOBAL_HEADER_SIZE);
  writeGlobalHeader(b, 0, snaplen, linktype);
  return b;
}

/**
 * Write a record header at buf[off] for a frame of origLen bytes of which
 * inclLen are kept, captured at `ms` (milliseconds since the epoch, with a
 * fraction: performance.timeOrigin + performance.now()). Returns 16.
 */
export function writeRecordHeader(buf: Buffer, off: number, ms: number, inclLen: number, origLen: number): number {
  const r = RECORD_HEADER;
  const sec = Math.floor(ms / 1000);
  const usec = Math.min(999_999, Math.floor((ms - sec * 1000) * 1000));
  buf.writeUInt32LE(sec >>> 0, off + r.tsSec.off);
  buf.writeUInt32LE(usec, off + r.tsUsec.off);
  buf.writeUInt32LE(inclLen, off + r.inclLen.off);
  buf.writeUInt32LE(origLen, off + r.origLen.off);
  return RECORD_HEADER_SIZE;
}

export interface PcapRecord {
  tsSec: number;
  tsUsec: number;
  origLen: number;
  data: Buffer;
}

export interface PcapFile {
  snaplen: number;
  linktype: number;
  records: PcapRecord[];
}

/** Parse a whole little-endian microsecond pcap file (tests, tools). Throws on anything else. */
export function parsePcap(buf: Buffer): PcapFile {
  if (buf.length < GLOBAL_HEADER_SIZE) throw new Error(`pcap: ${buf.length} bytes is shorter than the global header`);
  const magic = buf.readUInt32LE(GLOBAL_HEADER.magic.off);
  if (magic !== PCAP_MAGIC_USEC) throw new Error(`pcap: magic 0x${magic.toString(16)}, expected 0x${PCAP_MAGIC_USEC.toString(16)}`);
  const snaplen = buf.readUInt32LE(GLOBAL_HEADER.snaplen.off);
  const linktype = buf.readUInt32LE(GLOBAL_HEADER.linktype.off);
  const records: PcapRecord[] = [];
  let at = GLOBAL_HEADER_SIZE;
  while (at < buf.length) {
    if (at + RECORD_HEADER_SIZE > buf.length) throw new Error(`pcap: truncated record header at byte ${at}`);
    const incl = buf.readUInt32LE(at + RECORD_HEADER.inclLen.off);
    const end = at + RECORD_HEADER_SIZE + incl;
    if (incl > snaplen || end > buf.length) throw new Error(`pcap: bad or truncated record at byte ${at} (incl_len ${incl})`);
    records.push({
      tsSec: buf.readUInt32LE(at + RECORD_HEADER.tsSec.off),
      tsUsec: buf.readUInt32LE(at + RECORD_HEADER.tsUsec.off),
      origLen: buf.readUInt32LE(at + RECORD_HEADER.origLen.off),
      data: buf.subarray(at + RECORD_HEADER_SIZE, end),
    });
    at = end;
  }
  return { snaplen, linktype, records };
}

/**
 * Counts whole records in a pcap byte stream fed in arbitrary pieces (the
 * capture client checks what it writes without holding it).
 */
export class PcapRecordCounter {
  records = 0;
  /** Bytes still to skip (global header, then the current record's data). */
  private skip = GLOBAL_HEADER_SIZE;
  private readonly hdr = Buffer.alloc(RECORD_HEADER_SIZE);
  private hdrHave = 0;

  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        continue;
      }
      const n = Math.min(RECORD_HEADER_SIZE - this.hdrHave, chunk.length - i);
      this.hdr.set(chunk.subarray(i, i + n), this.hdrHave);
      this.hdrHave += n;
      i += n;
      if (this.hdrHave === RECORD_HEADER_SIZE) {
        this.hdrHave = 0;
        this.skip = this.hdr.readUInt32LE(RECORD_HEADER.inclLen.off);
        this.records++;
      }
    }
  }

  /** True when the stream ends on a record boundary. */
  get aligned(): boolean {
    return this.skip === 0 && this.hdrHave === 0;
  }
}
