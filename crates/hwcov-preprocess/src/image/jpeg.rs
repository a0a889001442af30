//! JPEG decoding that reproduces libjpeg-turbo's output byte for byte, as Pillow (and so transformers)
//! decodes JPEGs: libjpeg's accurate integer IDCT (`jidctint.c`), its "fancy" triangle-filter chroma
//! upsampling (`jdsample.c`) with the edge rows and columns `jdmainct.c` supplies, and its YCbCr to RGB
//! tables (`jdcolor.c`). Other decoders (the `image` crate's zune-jpeg among them) differ by a few
//! levels, which is far beyond the 1e-4 that `pixel_values` must match transformers by.
//!
//! Baseline, extended and progressive Huffman-coded 8-bit JPEGs with one (grayscale) or three
//! (YCbCr or RGB) components are read; arithmetic coding, lossless, 12-bit and CMYK files are
//! refused with an error.

use std::path::Path;

use hwcov_core::{Error, Result};

use super::RgbImage;

/// Zigzag index -> natural (row-major) index, with the 16 guard entries libjpeg keeps for corrupt
/// run lengths that step past the end of a block.
const NATURAL_ORDER: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
];

#[derive(Clone)]
struct Huffman {
    /// For each code length 1..=16: the largest code of that length (-1 where none), the first code,
    /// and where its values start.
    maxcode: [i32; 18],
    mincode: [i32; 17],
    valptr: [usize; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> std::result::Result<Self, String> {
        let mut maxcode = [-1i32; 18];
        let mut mincode = [0i32; 17];
        let mut valptr = [0usize; 17];
        let mut code = 0i32;
        let mut k = 0usize;
        for len in 1..=16 {
            let n = counts[len - 1] as usize;
            valptr[len] = k;
            mincode[len] = code;
            code += n as i32;
            k += n;
            if n > 0 {
                maxcode[len] = code - 1;
            }
            if code > (1 << len) {
                return Err("a Huffman table has more codes than its lengths allow".to_string());
            }
            code <<= 1;
        }
        // A sentinel that ends the search for corrupt data (libjpeg's maxcode[17]).
        maxcode[17] = i32::MAX;
        if k > values.len() {
            return Err("a Huffman table is shorter than its code counts".to_string());
        }
        Ok(Huffman {
            maxcode,
            mincode,
            valptr,
            values,
        })
    }
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    dc_table: usize,
    ac_table: usize,
    /// Blocks across and down the stored (MCU-padded) plane.
    blocks_w: usize,
    blocks_h: usize,
    /// Quantised coefficients in natural order, 64 per block.
    coefs: Vec<i16>,
    dc_pred: i32,
    /// Samples across and down before padding (`downsampled_width/height`).
    width: usize,
    height: usize,
}

struct Frame {
    progressive: bool,
    width: usize,
    height: usize,
    max_h: usize,
    max_v: usize,
    mcus_x: usize,
    mcus_y: usize,
    comps: Vec<Component>,
}

/// Entropy-coded data: bits MSB first, 0xFF00 unstuffed; a marker ends the data and then reads as
/// zero bits, as libjpeg reads it.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    nbits: u32,
    marker_hit: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            acc: 0,
            nbits: 0,
            marker_hit: false,
        }
    }

    fn fill(&mut self) -> std::result::Result<(), String> {
        while self.nbits <= 56 {
            let byte = if self.marker_hit {
                0
            } else {
                let Some(&b) = self.data.get(self.pos) else {
                    return Err("the image data ends early (truncated file)".to_string());
                };
                if b == 0xFF {
                    let next = self.data.get(self.pos + 1).copied();
                    match next {
                        Some(0x00) => {
                            self.pos += 2;
                            0xFF
                        }
                        Some(_) => {
                            self.marker_hit = true;
                            0
                        }
                        None => return Err("the image data ends early (truncated file)".to_string()),
                    }
                } else {
                    self.pos += 1;
                    b
                }
            };
            self.acc |= (byte as u64) << (56 - self.nbits);
            self.nbits += 8;
        }
        Ok(())
    }

    fn bits(&mut self, n: u32) -> std::result::Result<u32, String> {
        if n == 0 {
            return Ok(0);
        }
        if self.nbits < n {
            self.fill()?;
        }
        let v = (self.acc >> (64 - n)) as u32;
        self.acc <<= n;
        self.nbits -= n;
        Ok(v)
    }

    fn bit(&mut self) -> std::result::Result<u32, String> {
        self.bits(1)
    }

    fn decode(&mut self, t: &Huffman) -> std::result::Result<u8, String> {
        let mut code = self.bit()? as i32;
        let mut len = 1;
        while code > t.maxcode[len] {
            code = (code << 1) | self.bit()? as i32;
            len += 1;
        }
        if len > 16 {
            // libjpeg warns and returns 0 for a code it cannot find.
            return Ok(0);
        }
        let idx = t.valptr[len] + (code - t.mincode[len]) as usize;
        Ok(t.values.get(idx).copied().unwrap_or(0))
    }

    /// Drops the bits left in the byte buffer and steps past a restart marker (`process_restart`).
    fn restart(&mut self) {
        self.acc = 0;
        self.nbits = 0;
        self.marker_hit = false;
        // Skip to the next marker; consume it if it is RSTn.
        while self.pos + 1 < self.data.len() {
            if self.data[self.pos] == 0xFF && self.data[self.pos + 1] != 0x00 && self.data[self.pos + 1] != 0xFF {
                if (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
                    self.pos += 2;
                }
                return;
            }
            self.pos += 1;
        }
    }

    /// The position just after the entropy-coded data: the next marker.
    fn end(&self) -> usize {
        let mut p = self.pos;
        while p + 1 < self.data.len() && !(self.data[p] == 0xFF && self.data[p + 1] != 0x00) {
            p += 1;
        }
        p
    }
}

fn extend(v: u32, s: u32) -> i32 {
    if s == 0 {
        return 0;
    }
    let v = v as i32;
    if v < (1 << (s - 1)) { v + (-1 << s) + 1 } else { v }
}

struct Scan {
    comps: Vec<usize>,
    ss: usize,
    se: usize,
    ah: u32,
    al: u32,
}

/// Decodes a JPEG file into 8-bit RGB (grayscale repeated over the channels, as PIL's convert("RGB")).
pub fn decode(path: &Path, data: &[u8]) -> Result<RgbImage> {
    decode_inner(data).map_err(|m| Error::format(path, format!("cannot decode the JPEG: {m}")))
}

fn be16(data: &[u8], p: usize) -> std::result::Result<usize, String> {
    match data.get(p..p + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]]) as usize),
        None => Err("the file ends inside a marker segment (truncated file)".to_string()),
    }
}

fn decode_inner(data: &[u8]) -> std::result::Result<RgbImage, String> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG file (no SOI marker)".to_string());
    }
    let mut pos = 2;
    let mut qt: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut frame: Option<Frame> = None;
    let mut restart_interval = 0usize;
    let mut saw_jfif = false;
    let mut adobe_transform: Option<u8> = None;
    let mut eobrun = 0u32;
    loop {
        // Find the next marker, skipping fill bytes.
        while pos < data.len() && data[pos] != 0xFF {
            pos += 1;
        }
        while pos < data.len() && data[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = data.get(pos) else {
            if frame
                .as_ref()
                .is_some_and(|f| f.comps.iter().any(|c| !c.coefs.is_empty()))
            {
                return Err("the file ends before its EOI marker (truncated file)".to_string());
            }
            return Err("the file ends before any image data (truncated file)".to_string());
        };
        pos += 1;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 => break,
            _ => {}
        }
        let len = be16(data, pos)?;
        if len < 2 {
            return Err(format!("marker 0x{marker:02X} has a bad length"));
        }
        let seg = data
            .get(pos + 2..pos + len)
            .ok_or_else(|| "the file ends inside a marker segment (truncated file)".to_string())?;
        pos += len;
        match marker {
            0xE0 if seg.starts_with(b"JFIF\0") => saw_jfif = true,
            0xEE if seg.len() >= 12 && seg.starts_with(b"Adobe") => adobe_transform = Some(seg[11]),
            0xDB => {
                let mut p = 0;
                while p < seg.len() {
                    let (pq, tq) = ((seg[p] >> 4) as usize, (seg[p] & 15) as usize);
                    if tq > 3 {
                        return Err("a quantisation table id is above 3".to_string());
                    }
                    p += 1;
                    let mut table = [0u16; 64];
                    for (k, &nat) in NATURAL_ORDER.iter().take(64).enumerate() {
                        table[nat] = if pq == 0 {
                            *seg.get(p + k).ok_or("a quantisation table is cut short")? as u16
                        } else {
                            be16(seg, p + 2 * k).map_err(|_| "a quantisation table is cut short")? as u16
                        };
                    }
                    p += if pq == 0 { 64 } else { 128 };
                    qt[tq] = Some(table);
                }
            }
            0xC4 => {
                let mut p = 0;
                while p < seg.len() {
                    let (tc, th) = ((seg[p] >> 4) as usize, (seg[p] & 15) as usize);
                    let counts: [u8; 16] = seg
                        .get(p + 1..p + 17)
                        .ok_or("a Huffman table is cut short")?
                        .try_into()
                        .map_err(|_| "a Huffman table is cut short")?;
                    let n: usize = counts.iter().map(|&c| c as usize).sum();
                    let values = seg
                        .get(p + 17..p + 17 + n)
                        .ok_or("a Huffman table is cut short")?
                        .to_vec();
                    p += 17 + n;
                    if th > 3 || tc > 1 {
                        return Err("a Huffman table id is out of range".to_string());
                    }
                    let t = Huffman::new(&counts, values)?;
                    if tc == 0 {
                        dc_tables[th] = Some(t);
                    } else {
                        ac_tables[th] = Some(t);
                    }
                }
            }
            0xDD => restart_interval = be16(seg, 0)?,
            0xC0..=0xC2 => frame = Some(read_frame(seg, marker == 0xC2)?),
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(format!(
                    "an unsupported JPEG coding (SOF marker 0x{marker:02X}: lossless, hierarchical or arithmetic)"
                ));
            }
            0xDA => {
                let f = frame.as_mut().ok_or("a scan comes before the frame header")?;
                let scan = read_scan(seg, f)?;
                for &ci in &scan.comps {
                    let c = &f.comps[ci];
                    if qt[c.tq].is_none() {
                        return Err(format!("component {} uses an undefined quantisation table", c.id));
                    }
                }
                let mut br = BitReader::new(data, pos);
                decode_scan(f, &scan, &dc_tables, &ac_tables, restart_interval, &mut br, &mut eobrun)?;
                pos = br.end();
            }
            _ => {}
        }
    }
    let f = frame.ok_or("the file holds no image frame")?;
    finish(f, &qt, saw_jfif, adobe_transform)
}

fn read_frame(seg: &[u8], progressive: bool) -> std::result::Result<Frame, String> {
    if seg.len() < 6 {
        return Err("the frame header is cut short".to_string());
    }
    if seg[0] != 8 {
        return Err(format!("{}-bit samples are not supported (8-bit only)", seg[0]));
    }
    let height = be16(seg, 1)?;
    let width = be16(seg, 3)?;
    let n = seg[5] as usize;
    if width == 0 || height == 0 {
        return Err(format!("the image is empty ({width}x{height} pixels)"));
    }
    // The header the image crate read first may not be the frame decoded (a file can hold two).
    let pixels = (width as u64) * (height as u64);
    if pixels > super::MAX_PIXELS {
        return Err(format!(
            "the frame header declares {width}x{height} = {pixels} pixels, more than the {} hwcov decodes \
             (PIL's decompression bomb limit)",
            super::MAX_PIXELS
        ));
    }
    if n != 1 && n != 3 {
        return Err(format!(
            "{n} colour components (CMYK or other) are not supported; 1 (grayscale) or 3 (RGB) are"
        ));
    }
    if seg.len() < 6 + 3 * n {
        return Err("the frame header is cut short".to_string());
    }
    let mut comps = Vec::new();
    for i in 0..n {
        let b = &seg[6 + 3 * i..9 + 3 * i];
        let (h, v) = ((b[1] >> 4) as usize, (b[1] & 15) as usize);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) || b[2] > 3 {
            return Err("a component has bad sampling factors or quantisation table".to_string());
        }
        comps.push(Component {
            id: b[0],
            h,
            v,
            tq: b[2] as usize,
            dc_table: 0,
            ac_table: 0,
            blocks_w: 0,
            blocks_h: 0,
            coefs: Vec::new(),
            dc_pred: 0,
            width: 0,
            height: 0,
        });
    }
    let max_h = comps.iter().map(|c| c.h).max().unwrap_or(1);
    let max_v = comps.iter().map(|c| c.v).max().unwrap_or(1);
    let mcus_x = width.div_ceil(8 * max_h);
    let mcus_y = height.div_ceil(8 * max_v);
    for c in &mut comps {
        c.blocks_w = mcus_x * c.h;
        c.blocks_h = mcus_y * c.v;
        c.width = (width * c.h).div_ceil(max_h);
        c.height = (height * c.v).div_ceil(max_v);
        c.coefs = vec![0; c.blocks_w * c.blocks_h * 64];
    }
    Ok(Frame {
        progressive,
        width,
        height,
        max_h,
        max_v,
        mcus_x,
        mcus_y,
        comps,
    })
}

fn read_scan(seg: &[u8], f: &mut Frame) -> std::result::Result<Scan, String> {
    let n = *seg.first().ok_or("the scan header is cut short")? as usize;
    if n == 0 || n > 4 || seg.len() < 4 + 2 * n {
        return Err("the scan header is cut short".to_string());
    }
    let mut comps = Vec::new();
    for i in 0..n {
        let (id, tables) = (seg[1 + 2 * i], seg[2 + 2 * i]);
        let ci = f
            .comps
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| format!("a scan names component {id}, which the frame lacks"))?;
        f.comps[ci].dc_table = (tables >> 4) as usize & 3;
        f.comps[ci].ac_table = (tables & 15) as usize & 3;
        comps.push(ci);
    }
    let p = 1 + 2 * n;
    let (ss, se, ah, al) = (
        seg[p] as usize,
        seg[p + 1] as usize,
        (seg[p + 2] >> 4) as u32,
        (seg[p + 2] & 15) as u32,
    );
    if f.progressive {
        let bad = se > 63 || ss > se || (ss == 0 && se != 0) || (ss > 0 && n != 1) || al > 13;
        if bad {
            return Err("a progressive scan has bad spectral or approximation parameters".to_string());
        }
    }
    Ok(Scan {
        comps,
        ss: if f.progressive { ss } else { 0 },
        se: if f.progressive { se } else { 63 },
        ah,
        al,
    })
}

fn table<'a>(tables: &'a [Option<Huffman>; 4], i: usize, what: &str) -> std::result::Result<&'a Huffman, String> {
    tables[i]
        .as_ref()
        .ok_or_else(|| format!("a scan uses an undefined {what} Huffman table"))
}

fn decode_scan(
    f: &mut Frame,
    scan: &Scan,
    dc_tables: &[Option<Huffman>; 4],
    ac_tables: &[Option<Huffman>; 4],
    restart_interval: usize,
    br: &mut BitReader,
    eobrun: &mut u32,
) -> std::result::Result<(), String> {
    for &ci in &scan.comps {
        f.comps[ci].dc_pred = 0;
    }
    *eobrun = 0;
    // Blocks of one MCU: every block of each component's h x v group where the scan is
    // interleaved, one block otherwise.
    let (mcus_x, mcus_y) = if scan.comps.len() == 1 {
        let c = &f.comps[scan.comps[0]];
        (c.width.div_ceil(8), c.height.div_ceil(8))
    } else {
        (f.mcus_x, f.mcus_y)
    };
    let total = mcus_x * mcus_y;
    let mut restarts_left = restart_interval;
    for m in 0..total {
        if restart_interval > 0 {
            if restarts_left == 0 {
                br.restart();
                for &ci in &scan.comps {
                    f.comps[ci].dc_pred = 0;
                }
                *eobrun = 0;
                restarts_left = restart_interval;
            }
            restarts_left -= 1;
        }
        let (mx, my) = (m % mcus_x, m / mcus_x);
        for &ci in &scan.comps {
            let (h, v) = if scan.comps.len() == 1 {
                (1, 1)
            } else {
                (f.comps[ci].h, f.comps[ci].v)
            };
            for by in 0..v {
                for bx in 0..h {
                    let c = &mut f.comps[ci];
                    let (x, y) = (mx * h + bx, my * v + by);
                    let off = (y * c.blocks_w + x) * 64;
                    let block: &mut [i16; 64] = (&mut c.coefs[off..off + 64])
                        .try_into()
                        .map_err(|_| "internal block size".to_string())?;
                    if !f.progressive {
                        let dc = table(dc_tables, c.dc_table, "DC")?;
                        let ac = table(ac_tables, c.ac_table, "AC")?;
                        decode_block_baseline(br, dc, ac, &mut c.dc_pred, block)?;
                    } else if scan.ss == 0 {
                        if scan.ah == 0 {
                            let dc = table(dc_tables, c.dc_table, "DC")?;
                            let s = dc_diff(br, dc)?;
                            c.dc_pred += s;
                            block[0] = (c.dc_pred << scan.al) as i16;
                        } else if br.bit()? == 1 {
                            block[0] |= (1 << scan.al) as i16;
                        }
                    } else if scan.ah == 0 {
                        let ac = table(ac_tables, c.ac_table, "AC")?;
                        decode_ac_first(br, ac, scan, eobrun, block)?;
                    } else {
                        let ac = table(ac_tables, c.ac_table, "AC")?;
                        decode_ac_refine(br, ac, scan, eobrun, block)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn dc_diff(br: &mut BitReader, dc: &Huffman) -> std::result::Result<i32, String> {
    let s = dc.decode(br)? as u32;
    Ok(if s > 0 {
        extend(br.bits(s.min(16))?, s.min(16))
    } else {
        0
    })
}

impl Huffman {
    fn decode(&self, br: &mut BitReader) -> std::result::Result<u8, String> {
        br.decode(self)
    }
}

fn decode_block_baseline(
    br: &mut BitReader,
    dc: &Huffman,
    ac: &Huffman,
    pred: &mut i32,
    block: &mut [i16; 64],
) -> std::result::Result<(), String> {
    *pred += dc_diff(br, dc)?;
    block[0] = *pred as i16;
    let mut k = 1;
    while k < 64 {
        let rs = ac.decode(br)?;
        let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
        if s != 0 {
            k += r;
            let v = extend(br.bits(s)?, s);
            block[NATURAL_ORDER[k]] = v as i16;
        } else {
            if r != 15 {
                break;
            }
            k += 15;
        }
        k += 1;
    }
    Ok(())
}

fn decode_ac_first(
    br: &mut BitReader,
    ac: &Huffman,
    scan: &Scan,
    eobrun: &mut u32,
    block: &mut [i16; 64],
) -> std::result::Result<(), String> {
    if *eobrun > 0 {
        *eobrun -= 1;
        return Ok(());
    }
    let mut k = scan.ss;
    while k <= scan.se {
        let rs = ac.decode(br)?;
        let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
        if s != 0 {
            k += r;
            let v = extend(br.bits(s)?, s);
            block[NATURAL_ORDER[k]] = (v << scan.al) as i16;
        } else if r == 15 {
            k += 15;
        } else {
            *eobrun = 1 << r;
            if r > 0 {
                *eobrun += br.bits(r as u32)?;
            }
            *eobrun -= 1;
            break;
        }
        k += 1;
    }
    Ok(())
}

fn decode_ac_refine(
    br: &mut BitReader,
    ac: &Huffman,
    scan: &Scan,
    eobrun: &mut u32,
    block: &mut [i16; 64],
) -> std::result::Result<(), String> {
    let p1 = 1i16 << scan.al;
    let m1 = (-1i16) << scan.al;
    let mut k = scan.ss;
    let refine = |block: &mut [i16; 64], pos: usize, br: &mut BitReader| -> std::result::Result<(), String> {
        let c = block[pos];
        if br.bit()? == 1 && (c & p1) == 0 {
            block[pos] = if c >= 0 { c.wrapping_add(p1) } else { c.wrapping_add(m1) };
        }
        Ok(())
    };
    if *eobrun == 0 {
        while k <= scan.se {
            let rs = ac.decode(br)?;
            let mut r = (rs >> 4) as i32;
            let s = (rs & 15) as u32;
            let mut value = 0i16;
            if s != 0 {
                // s must be 1 in a refinement scan; libjpeg reads one sign bit whatever it is.
                value = if br.bit()? == 1 { p1 } else { m1 };
            } else if r != 15 {
                *eobrun = 1 << r;
                if r > 0 {
                    *eobrun += br.bits(r as u32)?;
                }
                break;
            }
            // Step over already-nonzero coefficients (refining each) and r zero ones.
            loop {
                let pos = NATURAL_ORDER[k];
                if block[pos] != 0 {
                    refine(block, pos, br)?;
                } else {
                    r -= 1;
                    if r < 0 {
                        break;
                    }
                }
                k += 1;
                if k > scan.se {
                    break;
                }
            }
            if s != 0 {
                block[NATURAL_ORDER[k]] = value;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        while k <= scan.se {
            let pos = NATURAL_ORDER[k];
            if block[pos] != 0 {
                refine(block, pos, br)?;
            }
            k += 1;
        }
        *eobrun -= 1;
    }
    Ok(())
}

/// `jpeg_idct_islow`: dequantise and inverse-DCT one block into 8x8 samples.
fn idct_islow(coefs: &[i16], q: &[u16; 64], out: &mut [u8], stride: usize) {
    const CONST_BITS: i32 = 13;
    const PASS1_BITS: i32 = 2;
    const F_0_298: i64 = 2446;
    const F_0_390: i64 = 3196;
    const F_0_541: i64 = 4433;
    const F_0_765: i64 = 6270;
    const F_0_899: i64 = 7373;
    const F_1_175: i64 = 9633;
    const F_1_501: i64 = 12299;
    const F_1_847: i64 = 15137;
    const F_1_961: i64 = 16069;
    const F_2_053: i64 = 16819;
    const F_2_562: i64 = 20995;
    const F_3_072: i64 = 25172;
    let descale = |x: i64, n: i32| (x + (1 << (n - 1))) >> n;
    let mut ws = [0i64; 64];
    // Pass 1: columns.
    for col in 0..8 {
        let c = |r: usize| coefs[r * 8 + col] as i64 * q[r * 8 + col] as i64;
        if (1..8).all(|r| coefs[r * 8 + col] == 0) {
            let dc = c(0) << PASS1_BITS;
            for r in 0..8 {
                ws[r * 8 + col] = dc;
            }
            continue;
        }
        let (z2, z3) = (c(2), c(6));
        let z1 = (z2 + z3) * F_0_541;
        let tmp2 = z1 + z3 * -F_1_847;
        let tmp3 = z1 + z2 * F_0_765;
        let (z2, z3) = (c(0), c(4));
        let tmp0 = (z2 + z3) << CONST_BITS;
        let tmp1 = (z2 - z3) << CONST_BITS;
        let (tmp10, tmp13, tmp11, tmp12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
        let (o0, o1, o2, o3) = odd_part(c(7), c(5), c(3), c(1));
        let out = [
            tmp10 + o3,
            tmp11 + o2,
            tmp12 + o1,
            tmp13 + o0,
            tmp13 - o0,
            tmp12 - o1,
            tmp11 - o2,
            tmp10 - o3,
        ];
        for r in 0..8 {
            ws[r * 8 + col] = descale(out[r], CONST_BITS - PASS1_BITS);
        }
    }
    // Pass 2: rows, to samples through libjpeg's range-limit table.
    for row in 0..8 {
        let w = &ws[row * 8..row * 8 + 8];
        let dst = &mut out[row * stride..row * stride + 8];
        if w[1..].iter().all(|&x| x == 0) {
            let v = range_limit(descale(w[0], PASS1_BITS + 3));
            dst.fill(v);
            continue;
        }
        let (z2, z3) = (w[2], w[6]);
        let z1 = (z2 + z3) * F_0_541;
        let tmp0 = (w[0] + w[4]) << CONST_BITS;
        let tmp3 = z1 + z2 * F_0_765;
        let tmp1 = (w[0] - w[4]) << CONST_BITS;
        let tmp2 = z1 + z3 * -F_1_847;
        let (tmp10, tmp13, tmp11, tmp12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
        let (o0, o1, o2, o3) = odd_part(w[7], w[5], w[3], w[1]);
        let vals = [
            tmp10 + o3,
            tmp11 + o2,
            tmp12 + o1,
            tmp13 + o0,
            tmp13 - o0,
            tmp12 - o1,
            tmp11 - o2,
            tmp10 - o3,
        ];
        for (d, v) in dst.iter_mut().zip(vals) {
            *d = range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
        }
    }

    /// The odd part of the 1-D IDCT: inputs (x7, x5, x3, x1), outputs (tmp0, tmp1, tmp2, tmp3).
    fn odd_part(t0: i64, t1: i64, t2: i64, t3: i64) -> (i64, i64, i64, i64) {
        let z1 = t0 + t3;
        let z2 = t1 + t2;
        let z3 = t0 + t2;
        let z4 = t1 + t3;
        let z5 = (z3 + z4) * F_1_175;
        let tmp0 = t0 * F_0_298;
        let tmp1 = t1 * F_2_053;
        let tmp2 = t2 * F_3_072;
        let tmp3 = t3 * F_1_501;
        let z1 = z1 * -F_0_899;
        let z2 = z2 * -F_2_562;
        let z3 = z3 * -F_1_961 + z5;
        let z4 = z4 * -F_0_390 + z5;
        (tmp0 + z1 + z3, tmp1 + z2 + z4, tmp2 + z2 + z3, tmp3 + z1 + z4)
    }
}

/// libjpeg's post-IDCT range limit: `sample_range_limit + CENTERJSAMPLE` indexed by `x & 1023`.
fn range_limit(x: i64) -> u8 {
    let i = (x & 1023) as i32;
    match i {
        0..=127 => (i + 128) as u8,
        128..=511 => 255,
        512..=895 => 0,
        _ => (i - 896) as u8,
    }
}

/// Every component's samples (the stored, padded plane) after the IDCT.
fn idct_component(c: &Component, q: &[u16; 64]) -> Vec<u8> {
    let stride = c.blocks_w * 8;
    let mut plane = vec![0u8; stride * c.blocks_h * 8];
    for by in 0..c.blocks_h {
        for bx in 0..c.blocks_w {
            let off = (by * c.blocks_w + bx) * 64;
            let start = by * 8 * stride + bx * 8;
            idct_islow(&c.coefs[off..off + 64], q, &mut plane[start..], stride);
        }
    }
    plane
}

/// One component brought to full resolution (`width` x `height` of the image, or a little more),
/// as libjpeg's upsampler does it.
fn upsample(c: &Component, plane: &[u8], f: &Frame) -> std::result::Result<(Vec<u8>, usize), String> {
    let stride = c.blocks_w * 8;
    let (dw, dh) = (c.width, c.height);
    // Rows beyond the component's real rows repeat its last one, the row above the first is the
    // first (jdmainct.c's context rows); columns are read only within the real width.
    let row = |r: isize| -> &[u8] {
        let r = r.clamp(0, dh as isize - 1) as usize;
        &plane[r * stride..r * stride + stride]
    };
    let out_w = f.width.max(dw * f.max_h / c.h);
    let (hx, vx) = (f.max_h / c.h, f.max_v / c.v);
    if !f.max_h.is_multiple_of(c.h) || !f.max_v.is_multiple_of(c.v) {
        return Err("fractional sampling factors are not supported".to_string());
    }
    let out_w = out_w.div_ceil(hx) * hx;
    let out_h = dh * vx;
    let mut out = vec![0u8; out_w * out_h];
    match (hx, vx) {
        (1, 1) => {
            for y in 0..dh {
                out[y * out_w..y * out_w + dw].copy_from_slice(&row(y as isize)[..dw]);
            }
        }
        (2, 1) if dw > 2 => {
            for y in 0..dh {
                let inp = row(y as isize);
                let o = &mut out[y * out_w..];
                let v0 = inp[0] as i32;
                o[0] = v0 as u8;
                o[1] = ((v0 * 3 + inp[1] as i32 + 2) >> 2) as u8;
                for x in 1..dw - 1 {
                    let v = inp[x] as i32 * 3;
                    o[2 * x] = ((v + inp[x - 1] as i32 + 1) >> 2) as u8;
                    o[2 * x + 1] = ((v + inp[x + 1] as i32 + 2) >> 2) as u8;
                }
                let v = inp[dw - 1] as i32;
                o[2 * dw - 2] = ((v * 3 + inp[dw - 2] as i32 + 1) >> 2) as u8;
                o[2 * dw - 1] = v as u8;
            }
        }
        (1, 2) => {
            for y in 0..dh {
                let inp0 = row(y as isize);
                for (v, (inp1, bias)) in [(row(y as isize - 1), 1), (row(y as isize + 1), 2)]
                    .into_iter()
                    .enumerate()
                {
                    let o = &mut out[(2 * y + v) * out_w..];
                    for x in 0..dw {
                        o[x] = ((inp0[x] as i32 * 3 + inp1[x] as i32 + bias) >> 2) as u8;
                    }
                }
            }
        }
        (2, 2) if dw > 2 => {
            for y in 0..dh {
                let inp0 = row(y as isize);
                for (v, inp1) in [row(y as isize - 1), row(y as isize + 1)].into_iter().enumerate() {
                    let o = &mut out[(2 * y + v) * out_w..];
                    let col = |x: usize| inp0[x] as i32 * 3 + inp1[x] as i32;
                    let mut this = col(0);
                    let mut next = col(1);
                    o[0] = ((this * 4 + 8) >> 4) as u8;
                    o[1] = ((this * 3 + next + 7) >> 4) as u8;
                    let mut last = this;
                    this = next;
                    for x in 1..dw - 1 {
                        next = col(x + 1);
                        o[2 * x] = ((this * 3 + last + 8) >> 4) as u8;
                        o[2 * x + 1] = ((this * 3 + next + 7) >> 4) as u8;
                        last = this;
                        this = next;
                    }
                    o[2 * dw - 2] = ((this * 3 + last + 8) >> 4) as u8;
                    o[2 * dw - 1] = ((this * 4 + 7) >> 4) as u8;
                }
            }
        }
        _ => {
            // Plain replication (h2v1 / h2v2 for narrow images, and any other integral factor).
            for y in 0..dh {
                let inp = row(y as isize);
                for x in 0..out_w {
                    let v = inp[(x / hx).min(stride - 1)];
                    for r in 0..vx {
                        out[(y * vx + r) * out_w + x] = v;
                    }
                }
            }
        }
    }
    Ok((out, out_w))
}

fn finish(
    f: Frame,
    qt: &[Option<[u16; 64]>; 4],
    saw_jfif: bool,
    adobe_transform: Option<u8>,
) -> std::result::Result<RgbImage, String> {
    let (w, h) = (f.width, f.height);
    let mut planes = Vec::new();
    for c in &f.comps {
        let q = qt[c.tq].as_ref().ok_or("a component's quantisation table is missing")?;
        let plane = idct_component(c, q);
        planes.push(upsample(c, &plane, &f)?);
    }
    let mut data = vec![0u8; w * h * 3];
    if planes.len() == 1 {
        let (p, pw) = &planes[0];
        for y in 0..h {
            for x in 0..w {
                let v = p[y * pw + x];
                data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[v, v, v]);
            }
        }
        return Ok(RgbImage {
            width: w,
            height: h,
            data,
        });
    }
    // libjpeg's guess of the colour space (`default_decompress_parms`).
    let ids: Vec<u8> = f.comps.iter().map(|c| c.id).collect();
    let rgb = if saw_jfif {
        false
    } else if let Some(t) = adobe_transform {
        t == 0
    } else {
        ids == [82, 71, 66]
    };
    let tables = YccTables::new();
    for y in 0..h {
        for x in 0..w {
            let s = |i: usize| planes[i].0[y * planes[i].1 + x];
            let px = if rgb {
                [s(0), s(1), s(2)]
            } else {
                tables.convert(s(0), s(1), s(2))
            };
            data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&px);
        }
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

/// `build_ycc_rgb_table` and `ycc_rgb_convert`.
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i64; 256],
    cb_g: [i64; 256],
}

impl YccTables {
    fn new() -> Self {
        const SCALEBITS: i64 = 16;
        const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
        let fix = |x: f64| (x * (1i64 << SCALEBITS) as f64 + 0.5) as i64;
        let mut t = YccTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix(1.40200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cb_b[i] = ((fix(1.77200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }

    fn convert(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let y = y as i32;
        let (cb, cr) = (cb as usize, cr as usize);
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + ((self.cb_g[cb] + self.cr_g[cr]) >> 16) as i32),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hwcov's own decoder refuses a frame header over the pixel limit before it allocates the
    /// coefficients (here 65535 x 65535: 8 GiB of them), whatever header was read before.
    #[test]
    fn a_frame_over_the_pixel_limit_is_refused_before_allocating() {
        let mut jpeg = vec![
            0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 8, 0xFF, 0xFF, 0xFF, 0xFF, 1, 1, 0x11, 0,
        ];
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        let err = decode(Path::new("bomb.jpg"), &jpeg).unwrap_err().to_string();
        assert!(
            err.contains("bomb.jpg") && err.contains("65535x65535") && err.contains("decompression bomb"),
            "{err}"
        );
    }
}
