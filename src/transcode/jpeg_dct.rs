//! Sequential DCT-based JPEG with Huffman coding (ITU-T T.81 Annex F, processes 1, 2 and 4:
//! SOF0 baseline 8-bit, SOF1 extended 8- and 12-bit; DICOM JPEG Baseline `.4.50` and JPEG
//! Extended `.4.51`, PS3.5 A.4.1): our decoder.
//!
//! dicom-rs 0.10 decodes JPEG with `jpeg-decoder`, which refuses a sample precision of 12
//! bits, the lossy JPEG CT and MR archives hold. This one decodes either precision: Huffman
//! decoding with the look-up tables and bit reader of [`super::jpeg`] (shared with the
//! lossless decoder), dequantization, the 8 x 8 inverse DCT in integers as IJG's `islow`
//! (the one DCMTK's `dcmdjpeg` uses, so the samples agree with DCMTK's), the level shift of
//! 2^(P-1) and the clamp to 0..2^P-1 (T.81 A.3.1, F.2.1.5); one or more components,
//! interleaved or not, restart intervals.
//!
//! What it leaves to `jpeg-decoder` (`Ok(None)`): progressive, lossless, hierarchical and
//! arithmetic-coded frames; components of different sampling factors (chroma subsampling);
//! three components that are (or may be) YCbCr, which `jpeg-decoder` converts to RGB; a
//! precision not matching Bits Allocated; a height defined by DNL.

pub use super::jpeg::Frame;
use super::jpeg::{be16, extend, next_marker, segment_len, Bits, Huffman, LOOKUP_BITS};

/// Where the coefficient of zig-zag index k sits in the 8 x 8 block (T.81 figure A.6).
const NATURAL: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
}

struct Geometry {
    width: usize,
    height: usize,
    precision: u8,
    /// Components in the frame (samples per pixel, interleaved in the output).
    components: usize,
    /// Bytes per output sample (1, or 2 little endian).
    bytes: usize,
    /// MCUs across and down in an interleaved scan.
    mcus_x: usize,
    mcus_y: usize,
}

/// Decode the sequential DCT JPEG codestream at the start of `data` into `out`, which must
/// be exactly the frame's size (`width * height * components` samples of `bytes` bytes).
/// `Ok(None)`: a codestream this decoder leaves to `jpeg-decoder`.
pub fn decode(data: &[u8], bytes: usize, out: &mut [u8]) -> Result<Option<Frame>, String> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("no SOI at the start of the frame".into());
    }
    let mut at = 2;
    // Quantization tables in zig-zag order (B.2.4.1).
    let mut quant: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut restart_interval = 0usize;
    let mut frame: Option<(Geometry, Vec<Component>)> = None;
    let mut adobe_transform: Option<u8> = None;
    loop {
        if at >= data.len() && frame.is_some() {
            break;
        }
        let marker = next_marker(data, &mut at)?;
        match marker {
            0xD9 => break,
            0xC0 | 0xC1 => {
                if frame.is_some() {
                    return Err("a second frame header".into());
                }
                let len = segment_len(data, at)?;
                let segment = data.get(at + 2..at + len).ok_or("SOF cut short")?;
                at += len;
                let [precision, h1, h0, w1, w0, n, rest @ ..] = segment else {
                    return Err("SOF cut short".into());
                };
                let (width, height, n) = (
                    (*w1 as usize) << 8 | *w0 as usize,
                    (*h1 as usize) << 8 | *h0 as usize,
                    *n as usize,
                );
                if rest.len() < 3 * n || n == 0 || n > 4 {
                    return Err("SOF with a bad number of components".into());
                }
                let specs = &rest[..3 * n];
                if !matches!((marker, precision), (0xC0, 8) | (0xC1, 8 | 12)) {
                    return Err(format!("SOF{} of precision {precision}", marker - 0xC0));
                }
                let (h, v) = (specs[1] >> 4, specs[1] & 0x0F);
                if !(1..=4).contains(&h) || !(1..=4).contains(&v) || specs[2] > 3 {
                    return Err("SOF with bad sampling factors or table".into());
                }
                // Subsampled colour, YCbCr, a precision stored in other than Bits
                // Allocated, a DNL height: left to jpeg-decoder.
                let rgb = n == 1
                    || adobe_transform == Some(0)
                    || (n == 3 && specs.chunks(3).map(|c| c[0]).eq(*b"RGB"));
                if specs.chunks(3).any(|c| c[1] != specs[1] || c[2] > 3)
                    || !(n == 1 || n == 3)
                    || !rgb
                    || (*precision > 8) != (bytes == 2)
                    || height == 0
                {
                    return Ok(None);
                }
                if width * height * n * bytes != out.len() {
                    return Err(format!(
                        "SOF of {width} x {height} x {n} does not fit the image"
                    ));
                }
                let (h, v) = (h as usize, v as usize);
                let mcus_x = width.div_ceil(8 * h);
                let mcus_y = height.div_ceil(8 * v);
                let components = specs
                    .chunks(3)
                    .map(|c| Component {
                        id: c[0],
                        h,
                        v,
                        quant: c[2] as usize,
                    })
                    .collect();
                let geometry = Geometry {
                    width,
                    height,
                    precision: *precision,
                    components: n,
                    bytes,
                    mcus_x,
                    mcus_y,
                };
                frame = Some((geometry, components));
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(None),
            0xDB => {
                let len = segment_len(data, at)?;
                let mut segment = data.get(at + 2..at + len).ok_or("DQT cut short")?;
                at += len;
                while let [pq_tq, rest @ ..] = segment {
                    let wide = pq_tq >> 4 != 0;
                    let size = if wide { 128 } else { 64 };
                    let values = rest.get(..size).ok_or("DQT cut short")?;
                    let mut table = [0u16; 64];
                    for (k, q) in table.iter_mut().enumerate() {
                        *q = if wide {
                            u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
                        } else {
                            values[k] as u16
                        };
                    }
                    *quant
                        .get_mut((pq_tq & 0x0F) as usize)
                        .ok_or("DQT table number above 3")? = Some(table);
                    segment = &rest[size..];
                }
            }
            0xC4 => {
                let len = segment_len(data, at)?;
                let mut segment = data.get(at + 2..at + len).ok_or("DHT cut short")?;
                at += len;
                while let [class_id, counts @ ..] = segment {
                    let counts: &[u8; 16] = counts
                        .get(..16)
                        .and_then(|c| c.try_into().ok())
                        .ok_or("DHT cut short")?;
                    let total: usize = counts.iter().map(|&c| c as usize).sum();
                    let values = segment.get(17..17 + total).ok_or("DHT cut short")?;
                    let tables = match class_id >> 4 {
                        0 => &mut dc_tables,
                        1 => &mut ac_tables,
                        _ => return Err("DHT table class above 1".into()),
                    };
                    *tables
                        .get_mut((class_id & 0x0F) as usize)
                        .ok_or("DHT table number above 3")? = Some(Huffman::new(counts, values)?);
                    segment = &segment[17 + total..];
                }
            }
            0xDD => {
                restart_interval = be16(data, at + 2)?;
                at += segment_len(data, at)?;
            }
            0xEE => {
                // Adobe APP14: its transform flag says whether three components are YCbCr.
                let len = segment_len(data, at)?;
                let segment = data.get(at + 2..at + len).unwrap_or(&[]);
                if segment.starts_with(b"Adobe") && segment.len() >= 12 {
                    adobe_transform = Some(segment[11]);
                }
                at += len;
            }
            0xDA => {
                let len = segment_len(data, at)?;
                let segment = data.get(at + 2..at + len).ok_or("SOS cut short")?;
                at += len;
                let Some((geometry, components)) = &mut frame else {
                    return Err("SOS before SOF".into());
                };
                let ns = *segment.first().ok_or("SOS cut short")? as usize;
                let selectors = segment.get(1..1 + 2 * ns).ok_or("SOS cut short")?;
                let [ss, se, ah_al] = segment
                    .get(1 + 2 * ns..4 + 2 * ns)
                    .and_then(|s| <[u8; 3]>::try_from(s).ok())
                    .ok_or("SOS cut short")?;
                if ns == 0 || ns > components.len() || ss != 0 || se != 63 || ah_al != 0 {
                    return Err("SOS with bad components or spectral selection".into());
                }
                let mut scan = Vec::with_capacity(ns);
                for pair in selectors.chunks(2) {
                    let index = components
                        .iter()
                        .position(|c| c.id == pair[0])
                        .ok_or("SOS names a component not in SOF")?;
                    if scan.iter().any(|s: &ScanComponent| s.index == index) {
                        return Err("SOS names a component twice".into());
                    }
                    fn table(
                        tables: &[Option<Huffman>; 4],
                        t: u8,
                    ) -> Result<&Huffman, &'static str> {
                        tables
                            .get(t as usize)
                            .and_then(|t| t.as_ref())
                            .ok_or("SOS uses an undefined Huffman table")
                    }
                    let q = quant[components[index].quant]
                        .ok_or("a component uses an undefined quantization table")?;
                    let mut natural = [0i32; 64];
                    for (k, &z) in NATURAL.iter().enumerate() {
                        natural[z] = q[k] as i32;
                    }
                    scan.push(ScanComponent {
                        index,
                        dc: table(&dc_tables, pair[1] >> 4)?,
                        ac: Ac::new(table(&ac_tables, pair[1] & 0x0F)?),
                        quant: natural,
                    });
                }
                at = decode_scan(data, at, geometry, components, &scan, restart_interval, out)?;
            }
            0xD0..=0xD7 | 0x01 => {}
            _ => at += segment_len(data, at)?,
        }
    }
    let Some((geometry, _)) = frame else {
        return Err("no SOF0/SOF1 frame header".into());
    };
    Ok(Some(Frame {
        width: geometry.width,
        height: geometry.height,
        components: geometry.components,
        precision: geometry.precision,
        end: at,
    }))
}

/// An AC Huffman table with the whole of a run/size symbol and its extra bits looked up at
/// once when both fit in [`LOOKUP_BITS`] bits: value << 16 | RS << 8 | bits used (0: they do
/// not, decode the symbol by itself).
struct Ac<'a> {
    table: &'a Huffman,
    fast: Box<[i32; 1 << LOOKUP_BITS]>,
}

impl<'a> Ac<'a> {
    fn new(table: &'a Huffman) -> Self {
        let mut fast = Box::new([0i32; 1 << LOOKUP_BITS]);
        for (index, slot) in fast.iter_mut().enumerate() {
            let (rs, len) = table.lookup(index);
            let (len, s) = (len as u32, (rs & 0x0F) as u32);
            if len == 0 || len + s > LOOKUP_BITS {
                continue;
            }
            let value = if s == 0 {
                0
            } else {
                let v = ((index as u32) >> (LOOKUP_BITS - len - s)) & ((1 << s) - 1);
                extend(v as i32, s)
            };
            *slot = value << 16 | (rs as i32) << 8 | (len + s) as i32;
        }
        Ac { table, fast }
    }
}

struct ScanComponent<'a> {
    index: usize,
    dc: &'a Huffman,
    ac: Ac<'a>,
    /// The quantization table in natural order.
    quant: [i32; 64],
}

/// One scan (T.81 F.2.2): its components' blocks decoded, dequantized, transformed and
/// written into `out` (the frame's samples, interleaved per pixel; blocks past the image's
/// edge cut off); in an interleaved scan MCU by MCU (A.2.3), in a one-component scan block
/// by block over the component's own size (A.2.2). Returns where the entropy-coded data
/// ended.
fn decode_scan(
    data: &[u8],
    at: usize,
    geometry: &Geometry,
    components: &[Component],
    scan: &[ScanComponent],
    restart_interval: usize,
    out: &mut [u8],
) -> Result<usize, String> {
    let mut bits = Bits::new(data, at);
    let mut predictions = [0i32; 4];
    let precision = geometry.precision;
    let (blocks_x, blocks_y, per_mcu) = if scan.len() == 1 {
        // The component's size (A.1.1) in blocks; every component has the frame's
        // sampling factors here, so it is the image size.
        (geometry.width.div_ceil(8), geometry.height.div_ceil(8), 1)
    } else {
        (geometry.mcus_x, geometry.mcus_y, 0)
    };
    let total = blocks_x * blocks_y;
    let mut coefficients = [0i32; 64];
    let mut samples = [[0u16; 8]; 8];
    let mut restarts = 0u8;
    for mcu in 0..total {
        if restart_interval != 0 && mcu != 0 && mcu % restart_interval == 0 {
            if bits.ended_early() {
                return Err("the entropy-coded data ends early".into());
            }
            if !bits.restart(restarts) {
                return Err(format!("RST{} missing", restarts & 7));
            }
            restarts = restarts.wrapping_add(1);
            predictions = [0; 4];
        }
        let (mx, my) = (mcu % blocks_x, mcu / blocks_x);
        for (s, sc) in scan.iter().enumerate() {
            let component = &components[sc.index];
            let (h, v) = if per_mcu == 1 {
                (1, 1)
            } else {
                (component.h, component.v)
            };
            for by in 0..v {
                for bx in 0..h {
                    let dc_only = block(&mut bits, sc, &mut predictions[s], &mut coefficients)?;
                    let (x, y) = ((mx * h + bx) * 8, (my * v + by) * 8);
                    if dc_only {
                        samples = [[dc_sample(coefficients[0], precision); 8]; 8];
                    } else {
                        idct_islow(&coefficients, precision, &mut samples);
                    }
                    store(out, geometry, sc.index, x, y, &samples);
                }
            }
        }
    }
    if bits.ended_early() {
        return Err("the entropy-coded data ends early".into());
    }
    let mut end = bits.marker.unwrap_or(bits.at);
    while end + 1 < data.len()
        && !(data[end] == 0xFF && data[end + 1] != 0 && data[end + 1] != 0xFF)
    {
        end += 1;
    }
    Ok(end.min(data.len()))
}

/// A block's samples (`samples[column][row]`, as [`idct_islow`] leaves them) into the frame
/// at `x`, `y` as component `c`; what lies past the image's right or bottom edge is dropped.
#[inline(always)]
fn store(out: &mut [u8], g: &Geometry, c: usize, x: usize, y: usize, samples: &[[u16; 8]; 8]) {
    if x >= g.width || y >= g.height {
        return;
    }
    let (w, h) = ((g.width - x).min(8), (g.height - y).min(8));
    let n = g.components;
    for r in 0..h {
        let first = ((y + r) * g.width + x) * n;
        match (g.bytes, n) {
            (1, 1) => {
                for (o, column) in out[first..first + w].iter_mut().zip(samples) {
                    *o = column[r] as u8;
                }
            }
            (2, 1) => {
                for (o, column) in out[2 * first..2 * (first + w)]
                    .chunks_exact_mut(2)
                    .zip(samples)
                {
                    o.copy_from_slice(&column[r].to_le_bytes());
                }
            }
            (1, _) => {
                for (o, column) in out[first..first + w * n].chunks_exact_mut(n).zip(samples) {
                    o[c] = column[r] as u8;
                }
            }
            _ => {
                for (o, column) in out[2 * first..2 * (first + w * n)]
                    .chunks_exact_mut(2 * n)
                    .zip(samples)
                {
                    o[2 * c..2 * c + 2].copy_from_slice(&column[r].to_le_bytes());
                }
            }
        }
    }
}

/// One block's coefficients (F.2.2.1, F.2.2.2), dequantized into natural order in
/// `coefficients` (left zero where none was coded). `true`: only the DC coefficient.
#[inline(always)]
fn block(
    bits: &mut Bits,
    sc: &ScanComponent,
    prediction: &mut i32,
    coefficients: &mut [i32; 64],
) -> Result<bool, String> {
    let diff = bits.difference(sc.dc)?;
    *prediction = prediction.wrapping_add(diff);
    *coefficients = [0; 64];
    coefficients[0] = prediction.wrapping_mul(sc.quant[0]);
    let mut k = 1usize;
    let mut any = false;
    while k < 64 {
        let entry = sc.ac.fast[bits.peek(LOOKUP_BITS) as usize];
        let (rs, value) = if entry & 0xFF != 0 {
            bits.consume((entry & 0xFF) as u32);
            ((entry >> 8) as u8, entry >> 16)
        } else {
            let rs = bits.symbol(sc.ac.table)?;
            let s = (rs & 0x0F) as u32;
            let v = if s == 0 { 0 } else { bits.peek(s) as i32 };
            bits.consume(s);
            (rs, if s == 0 { 0 } else { extend(v, s) })
        };
        let (r, s) = ((rs >> 4) as usize, rs & 0x0F);
        if s == 0 {
            if r == 15 {
                k += 16;
                continue;
            }
            break;
        }
        k += r;
        if k > 63 {
            return Err("AC coefficients past the block's end".into());
        }
        let z = NATURAL[k];
        coefficients[z] = value.wrapping_mul(sc.quant[z]);
        any = true;
        k += 1;
    }
    Ok(!any)
}

/// The level shift and clamp of a sample (A.3.1, F.2.1.5): to 0..2^P-1 around 2^(P-1).
#[inline(always)]
fn clamp<T: Int>(x: T, precision: u8) -> u16 {
    let x = (x + T::from(1 << (precision - 1))).clamp(T::from(0), T::from((1 << precision) - 1));
    let x: i64 = x.into();
    x as u16
}

const CONST_BITS: u32 = 13;

fn pass1_bits(precision: u8) -> u32 {
    // IJG's jidctint.c: 2 for 8-bit samples, 1 for 12-bit (to stay in 32 bits).
    if precision > 8 {
        1
    } else {
        2
    }
}

#[inline(always)]
fn descale<T: Int>(x: T, n: u32) -> T {
    (x + T::from(1 << (n - 1))) >> n
}

/// The sample of a block whose only coefficient is its DC one, as [`idct_islow`] gives it.
fn dc_sample(dc: i32, precision: u8) -> u16 {
    let p = pass1_bits(precision);
    clamp(descale(i64::from(dc) << p, p + 3), precision)
}

/// The integer types the inverse DCT runs in: `i64` always fits (IJG's `INT32` is a `long`,
/// 64 bits here, in DCMTK's build), `i32` when the inputs allow ([`FITS_I32`]), which the
/// compiler can run on several values at once.
trait Int:
    Copy
    + Ord
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::Shl<u32, Output = Self>
    + std::ops::Shr<u32, Output = Self>
    + From<i32>
    + Into<i64>
{
}
impl Int for i32 {}
impl Int for i64 {}

/// Inputs of [`idct_1d`] within +-32767 keep every value it computes within `i32`: the
/// largest sum of absolute weights of any of its intermediate values over its eight inputs
/// is 61,214 (the outputs'), and 61,214 * 32,767 plus the descaling's rounding (at most
/// 2^17) is below 2^31.
const FITS_I32: u32 = 32767;

/// Are all of `values` within +-[`FITS_I32`]? (One OR over all: no bit above bit 14.)
#[inline(always)]
fn fits_i32(values: impl Iterator<Item = i32>) -> bool {
    values.fold(0u32, |acc, v| acc | v.unsigned_abs()) <= FITS_I32
}

const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

/// The 1-D 8-point inverse DCT of the Loeffler-Ligtenberg-Moschytz algorithm as IJG's
/// `jidctint.c` has it (13-bit fixed-point constants): `x` in, the eight outputs before
/// their descaling.
#[inline(always)]
fn idct_1d<T: Int>(x: [T; 8]) -> [T; 8] {
    let k = |c: i32| T::from(c);
    // Even part.
    let z1 = (x[2] + x[6]) * k(FIX_0_541196100);
    let tmp2 = z1 - x[6] * k(FIX_1_847759065);
    let tmp3 = z1 + x[2] * k(FIX_0_765366865);
    let tmp0 = (x[0] + x[4]) << CONST_BITS;
    let tmp1 = (x[0] - x[4]) << CONST_BITS;
    let (tmp10, tmp13, tmp11, tmp12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
    // Odd part.
    let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
    let (z1, z2, z3, z4) = (t0 + t3, t1 + t2, t0 + t2, t1 + t3);
    let z5 = (z3 + z4) * k(FIX_1_175875602);
    let (t0, t1, t2, t3) = (
        t0 * k(FIX_0_298631336),
        t1 * k(FIX_2_053119869),
        t2 * k(FIX_3_072711026),
        t3 * k(FIX_1_501321110),
    );
    let z1 = -z1 * k(FIX_0_899976223);
    let z2 = -z2 * k(FIX_2_562915447);
    let z3 = -z3 * k(FIX_1_961570560) + z5;
    let z4 = -z4 * k(FIX_0_390180644) + z5;
    let (t0, t1, t2, t3) = (t0 + z1 + z3, t1 + z2 + z4, t2 + z2 + z3, t3 + z1 + z4);
    [
        tmp10 + t3,
        tmp11 + t2,
        tmp12 + t1,
        tmp13 + t0,
        tmp13 - t0,
        tmp12 - t1,
        tmp11 - t2,
        tmp10 - t3,
    ]
}

/// The 8 x 8 inverse DCT of dequantized coefficients (A.3.3, natural order) in integers as
/// IJG's `islow`: columns, then rows; samples level-shifted and clamped into
/// `out[column][row]`. In `i32` when the values allow ([`FITS_I32`]), else in `i64`: the
/// same results either way.
fn idct_islow(coefficients: &[i32; 64], precision: u8, out: &mut [[u16; 8]; 8]) {
    if fits_i32(coefficients.iter().copied()) {
        let mut work = [[0i32; 8]; 8];
        columns(coefficients, precision, &mut work);
        if fits_i32(work.iter().flatten().copied()) {
            rows(&work, precision, out);
            return;
        }
    }
    let mut work = [[0i64; 8]; 8];
    columns(coefficients, precision, &mut work);
    rows(&work, precision, out);
}

/// IJG's first pass: the 1-D transform of each column (one of only a DC value shortcut, as
/// IJG does: the same values), descaled to `PASS1_BITS` of extra precision, into
/// `work[column][row]`.
#[inline(always)]
fn columns<T: Int>(coefficients: &[i32; 64], precision: u8, work: &mut [[T; 8]; 8]) {
    let pass1 = pass1_bits(precision);
    for (col, out) in work.iter_mut().enumerate() {
        let c = |r: usize| T::from(coefficients[r * 8 + col]);
        if (1..8).all(|r| coefficients[r * 8 + col] == 0) {
            *out = [c(0) << pass1; 8];
            continue;
        }
        let y = idct_1d([c(0), c(1), c(2), c(3), c(4), c(5), c(6), c(7)]);
        for (o, v) in out.iter_mut().zip(y) {
            *o = descale(v, CONST_BITS - pass1);
        }
    }
}

/// IJG's second pass: the 1-D transform of each row, all eight rows side by side (each
/// step one operation over eight values, which the compiler vectorizes; IJG's shortcut for
/// a row of only a DC value gives the same as the full transform), descaled, level-shifted
/// and clamped into `out[column][row]`.
#[inline(always)]
fn rows<T: Int>(work: &[[T; 8]; 8], precision: u8, out: &mut [[u16; 8]; 8]) {
    let shift = CONST_BITS + pass1_bits(precision) + 3;
    for r in 0..8 {
        let y = idct_1d([
            work[0][r], work[1][r], work[2][r], work[3][r], work[4][r], work[5][r], work[6][r],
            work[7][r],
        ]);
        for (column, v) in out.iter_mut().zip(y) {
            column[r] = clamp(descale(v, shift), precision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of only a DC coefficient is flat at DC / 8 around the level shift (A.3.3),
    /// through the full transform and the shortcut alike.
    #[test]
    fn dc_only_blocks_are_flat() {
        for (precision, dc, expected) in [(8u8, 80, 138u16), (12, -16000, 48), (12, 40000, 4095)] {
            let mut coefficients = [0i32; 64];
            coefficients[0] = dc;
            let mut out = [[0u16; 8]; 8];
            idct_islow(&coefficients, precision, &mut out);
            assert!(
                out.iter().flatten().all(|&v| v == expected),
                "{precision}: {out:?}"
            );
            assert_eq!(dc_sample(dc, precision), expected);
        }
    }

    /// IJG's `jidctint.c` as it is written (64-bit `INT32`, one column then one row at a
    /// time), for comparing with [`idct_islow`]: row-major samples.
    fn ijg_islow(coefficients: &[i32; 64], precision: u8) -> [u16; 64] {
        let pass1 = pass1_bits(precision);
        let mut work = [0i64; 64];
        for col in 0..8 {
            let c = |r: usize| i64::from(coefficients[r * 8 + col]);
            if (1..8).all(|r| coefficients[r * 8 + col] == 0) {
                for r in 0..8 {
                    work[r * 8 + col] = c(0) << pass1;
                }
                continue;
            }
            let y = idct_1d([c(0), c(1), c(2), c(3), c(4), c(5), c(6), c(7)]);
            for r in 0..8 {
                work[r * 8 + col] = descale(y[r], CONST_BITS - pass1);
            }
        }
        let mut out = [0u16; 64];
        for row in 0..8 {
            let w: [i64; 8] = work[row * 8..row * 8 + 8].try_into().unwrap();
            if w[1..].iter().all(|&v| v == 0) {
                out[row * 8..row * 8 + 8].fill(clamp(descale(w[0], pass1 + 3), precision));
                continue;
            }
            for (col, v) in idct_1d(w).into_iter().enumerate() {
                out[row * 8 + col] = clamp(descale(v, CONST_BITS + pass1 + 3), precision);
            }
        }
        out
    }

    /// The transform in `i32` (when the values allow) and side by side gives IJG's samples
    /// exactly: random blocks, sparse and dense, small and large (past `i32`'s reach too).
    #[test]
    fn idct_equals_ijg_s() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let precision = if round % 2 == 0 { 8 } else { 12 };
            let magnitude = [64i64, 1024, 4096, 32767, 40000, 1 << 20][round % 6];
            let density = 1 + (round / 6) % 64;
            let mut coefficients = [0i32; 64];
            for c in coefficients.iter_mut().take(density) {
                *c = ((next() % (2 * magnitude as u64 + 1)) as i64 - magnitude) as i32;
            }
            if round % 7 == 0 {
                coefficients.swap(0, (next() % 64) as usize);
            }
            let mut out = [[0u16; 8]; 8];
            idct_islow(&coefficients, precision, &mut out);
            let expected = ijg_islow(&coefficients, precision);
            for r in 0..8 {
                for c in 0..8 {
                    assert_eq!(out[c][r], expected[r * 8 + c], "{round}: {coefficients:?}");
                }
            }
        }
    }

    /// Truncated and lying codestreams: errors, not panics.
    #[test]
    fn broken_codestreams_fail() {
        let mut out = vec![0u8; 64];
        assert!(decode(&[0xFF, 0xD8], 1, &mut out).is_err());
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xC0, 0x00], 1, &mut out).is_err());
        // SOF0 of 8 x 8, one component, then SOS without tables.
        let sof = [
            0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0, 0xFF, 0xDA, 0, 8, 1, 1, 0,
            0, 63, 0,
        ];
        assert!(decode(&sof, 1, &mut out).is_err());
        // A size that does not fit the image.
        assert!(decode(&sof, 1, &mut [0u8; 65]).is_err());
        // Progressive: left to jpeg-decoder.
        let mut progressive = sof;
        progressive[3] = 0xC2;
        assert!(matches!(decode(&progressive, 1, &mut out), Ok(None)));
    }

    /// Every prefix and every single-byte change of real codestreams (the fuzz seeds of
    /// DCMTK's 12-bit extended and Pillow's with restart markers): decoded or an error, never
    /// a panic.
    #[test]
    fn every_cut_and_flip_of_real_streams_is_safe() {
        for (seed, bytes, size) in [
            (
                &include_bytes!("../../fuzz/corpus/codestream/seed-jpeg-extended")[..],
                2,
                29 * 37,
            ),
            (
                &include_bytes!("../../fuzz/corpus/codestream/seed-jpeg-restart")[..],
                1,
                56 * 72,
            ),
        ] {
            let data = &seed[4..];
            let mut out = vec![0u8; size * bytes];
            assert!(decode(data, bytes, &mut out).unwrap().is_some());
            for cut in 0..data.len() {
                let _ = decode(&data[..cut], bytes, &mut out);
            }
            let mut changed = data.to_vec();
            for at in (0..data.len()).step_by(3) {
                changed[at] ^= 0xA5;
                let _ = decode(&changed, bytes, &mut out);
                changed[at] ^= 0xA5;
            }
        }
    }
}
