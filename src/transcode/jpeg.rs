//! What the JPEG decoders share (ITU-T T.81): Huffman tables with look-up of the next
//! [`LOOKUP_BITS`] bits, the bit reader of entropy-coded data, marker segment lengths. Used by
//! the lossless decoder ([`super::jpeg_lossless`], Annex H) and the sequential DCT decoder
//! ([`super::jpeg_dct`], Annex F).

/// One decoded frame: samples interleaved per pixel, little endian when over 8 bits.
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub components: usize,
    pub precision: u8,
    /// Where the codestream ended (after EOI, or where the entropy-coded data stopped).
    pub end: usize,
}

pub(super) const LOOKUP_BITS: u32 = 12;

/// A DC Huffman table (T.81 C, F.2.2.3 / H.2): canonical codes; two lookup tables of the
/// next [`LOOKUP_BITS`] bits: `differences` the whole difference when its code and extra
/// bits fit (difference << 8 | bits used, 0: they do not), `lookup` the symbol and code
/// length (0 length: a longer code); the per-length bounds for the rest.
pub(super) struct Huffman {
    differences: Box<[i32; 1 << LOOKUP_BITS]>,
    lookup: Box<[(u8, u8); 1 << LOOKUP_BITS]>,
    /// For code length l (1..=16): the largest code of that length (or -1) and the index in
    /// `values` of its first code minus that first code.
    max_code: [i32; 18],
    offset: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    /// The symbol and code length for the next [`LOOKUP_BITS`] bits `index` (length 0: a
    /// longer code).
    pub(super) fn lookup(&self, index: usize) -> (u8, u8) {
        self.lookup[index]
    }

    pub(super) fn new(counts: &[u8; 16], values: &[u8]) -> Result<Huffman, String> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > 256 || values.len() < total {
            return Err("a Huffman table with more codes than values".into());
        }
        let mut lookup = Box::new([(0u8, 0u8); 1 << LOOKUP_BITS]);
        let mut max_code = [-1i32; 18];
        let mut offset = [0i32; 17];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16u32 {
            let n = counts[len as usize - 1] as usize;
            offset[len as usize] = k as i32 - code as i32;
            for _ in 0..n {
                if code >= 1 << len {
                    return Err("a Huffman table whose codes overflow".into());
                }
                if len <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - len;
                    let first = (code << shift) as usize;
                    for slot in &mut lookup[first..first + (1 << shift)] {
                        *slot = (values[k], len as u8);
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                max_code[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        max_code[17] = i32::MAX;
        let mut differences = Box::new([0i32; 1 << LOOKUP_BITS]);
        for (index, slot) in differences.iter_mut().enumerate() {
            let (ssss, len) = lookup[index];
            let len = len as u32;
            if len == 0 {
                continue;
            }
            *slot = match ssss {
                0 => len as i32,
                16 => 32768 << 8 | len as i32,
                1..=15 if len + ssss as u32 <= LOOKUP_BITS => {
                    let n = ssss as u32;
                    let v = ((index as u32) >> (LOOKUP_BITS - len - n)) & ((1 << n) - 1);
                    extend(v as i32, n) << 8 | (len + n) as i32
                }
                _ => 0,
            };
        }
        Ok(Huffman {
            differences,
            lookup,
            max_code,
            offset,
            values: values[..total].to_vec(),
        })
    }
}

/// Entropy-coded data (T.81 B.1.1.5, F.1.2.3): a stuffed 0xFF00 is 0xFF; a marker or the
/// end of the buffer ends the data, after which zeros are fed (never a read past the
/// buffer); a scan that consumed any of those zeros ended early: an error.
pub(super) struct Bits<'a> {
    data: &'a [u8],
    pub(super) at: usize,
    buffer: u64,
    count: u32,
    /// Where a marker (or the end of the buffer) was met: the data ends there.
    pub(super) marker: Option<usize>,
    /// Zero bytes fed after it.
    fed: u32,
}

impl<'a> Bits<'a> {
    pub(super) fn new(data: &'a [u8], at: usize) -> Self {
        Bits {
            data,
            at,
            buffer: 0,
            count: 0,
            marker: None,
            fed: 0,
        }
    }

    #[inline(always)]
    pub(super) fn refill(&mut self) {
        // Eight bytes at once when none of them is 0xFF (no stuffing, no marker).
        if self.marker.is_none() {
            if let Some(next) = self.data.get(self.at..self.at + 8) {
                let word = u64::from_be_bytes(next.try_into().expect("eight bytes"));
                let inverted = !word;
                let has_ff = inverted.wrapping_sub(0x0101_0101_0101_0101)
                    & !inverted
                    & 0x8080_8080_8080_8080;
                if has_ff == 0 {
                    let take = (64 - self.count) / 8;
                    self.buffer |= (word >> (64 - 8 * take)) << (64 - self.count - 8 * take);
                    self.count += 8 * take;
                    self.at += take as usize;
                    return;
                }
            }
        }
        while self.count <= 56 {
            let byte = if self.marker.is_some() {
                self.fed += 1;
                0
            } else {
                match self.data.get(self.at) {
                    Some(&0xFF) => match self.data.get(self.at + 1) {
                        Some(0x00) => {
                            self.at += 2;
                            0xFF
                        }
                        _ => {
                            self.marker = Some(self.at);
                            self.fed += 1;
                            0
                        }
                    },
                    Some(&b) => {
                        self.at += 1;
                        b
                    }
                    None => {
                        self.marker = Some(self.at);
                        self.fed += 1;
                        0
                    }
                }
            };
            self.buffer |= (byte as u64) << (56 - self.count);
            self.count += 8;
        }
    }

    #[inline(always)]
    pub(super) fn peek(&mut self, n: u32) -> u32 {
        if self.count < n {
            self.refill();
        }
        (self.buffer >> (64 - n)) as u32
    }

    #[inline(always)]
    pub(super) fn consume(&mut self, n: u32) {
        self.buffer <<= n;
        self.count -= n;
    }

    /// One Huffman-coded symbol.
    #[inline(always)]
    pub(super) fn symbol(&mut self, table: &Huffman) -> Result<u8, String> {
        let (value, len) = table.lookup[self.peek(LOOKUP_BITS) as usize];
        if len > 0 {
            self.consume(len as u32);
            return Ok(value);
        }
        let code = self.peek(16) as i32;
        for len in LOOKUP_BITS + 1..=16 {
            let prefix = code >> (16 - len);
            if prefix <= table.max_code[len as usize] {
                self.consume(len);
                let index = (table.offset[len as usize] + prefix) as usize;
                return table
                    .values
                    .get(index)
                    .copied()
                    .ok_or_else(|| "a Huffman code outside its table".to_string());
            }
        }
        Err("an invalid Huffman code".into())
    }

    /// A difference (T.81 H.1.2.2, F.2.2.1): category `ssss` Huffman coded, then ssss extra
    /// bits; in one look-up when both fit in [`LOOKUP_BITS`].
    #[inline(always)]
    pub(super) fn difference(&mut self, table: &Huffman) -> Result<i32, String> {
        let entry = table.differences[self.peek(LOOKUP_BITS) as usize];
        if entry & 0xFF != 0 {
            self.consume((entry & 0xFF) as u32);
            return Ok(entry >> 8);
        }
        match self.symbol(table)? {
            0 => Ok(0),
            ssss @ 1..=15 => {
                let n = ssss as u32;
                let v = self.peek(n) as i32;
                self.consume(n);
                Ok(extend(v, n))
            }
            16 => Ok(32768),
            ssss => Err(format!("difference category {ssss}")),
        }
    }

    /// Past a restart marker (T.81 F.1.2.3, RSTm with m = `expected`): the next bits are
    /// those after it, whatever bits were left before it (padding) dropped. `false`: the
    /// next marker is not that one.
    pub(super) fn restart(&mut self, expected: u8) -> bool {
        let data = self.data;
        let mut at = self.marker.unwrap_or(self.at);
        while at + 1 < data.len()
            && !(data[at] == 0xFF && data[at + 1] != 0 && data[at + 1] != 0xFF)
        {
            at += 1;
        }
        if data.get(at) == Some(&0xFF) && data.get(at + 1) == Some(&(0xD0 + (expected & 7))) {
            *self = Bits::new(data, at + 2);
            true
        } else {
            false
        }
    }

    /// Did the decoding use any of the zeros fed after the data?
    pub(super) fn ended_early(&self) -> bool {
        self.count < self.fed * 8
    }
}

/// The difference of `n` extra bits `v` (T.81 F.2.2.1, EXTEND).
#[inline(always)]
pub(super) fn extend(v: i32, n: u32) -> i32 {
    if v < 1 << (n - 1) {
        v - (1 << n) + 1
    } else {
        v
    }
}

/// The marker at `at` (T.81 B.1.1.2: fill bytes 0xFF may precede it), `at` moved past it.
pub(super) fn next_marker(data: &[u8], at: &mut usize) -> Result<u8, String> {
    while data.get(*at) == Some(&0xFF) && data.get(*at + 1) == Some(&0xFF) {
        *at += 1;
    }
    if data.get(*at) != Some(&0xFF) {
        return Err("a marker expected".into());
    }
    let marker = *data.get(*at + 1).ok_or("the codestream ends before EOI")?;
    *at += 2;
    Ok(marker)
}

pub(super) fn be16(data: &[u8], at: usize) -> Result<usize, String> {
    data.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| "the codestream ends inside a marker segment".to_string())
}

/// The length of the marker segment at `at` (its length field included, B.1.1.4).
pub(super) fn segment_len(data: &[u8], at: usize) -> Result<usize, String> {
    match be16(data, at)? {
        len @ 2.. => Ok(len),
        _ => Err("a marker segment shorter than its length field".into()),
    }
}
