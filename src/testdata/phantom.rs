//! Synthetic phantoms: stacks of filled ellipses with a little deterministic noise.
//!
//! Coordinates are normalised: x and y run from -1 (left/top) to +1 (right/bottom) across
//! the image, so one phantom description renders at any matrix size. Later shapes paint
//! over earlier ones. Values are *stored* pixel values (before rescale).

use super::rng::SplitMix64;
use std::io::{self, Write};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Ellipse {
    pub cx: f32,
    pub cy: f32,
    pub rx: f32,
    pub ry: f32,
    pub value: i32,
}

pub(crate) const fn ellipse(cx: f32, cy: f32, rx: f32, ry: f32, value: i32) -> Ellipse {
    Ellipse {
        cx,
        cy,
        rx,
        ry,
        value,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Phantom {
    pub background: i32,
    pub shapes: Vec<Ellipse>,
    /// Uniform noise amplitude in stored units (applied inside shapes and background).
    pub noise: i32,
    /// Largest storable value (2^BitsStored - 1).
    pub max: i32,
}

impl Phantom {
    /// Render one row. `rng` is advanced by `ceil(cols / 4)` steps per row, so rendering a
    /// frame row by row (streaming) and in one go give identical pixels.
    pub(crate) fn render_row(
        &self,
        y: usize,
        rows: usize,
        cols: usize,
        rng: &mut SplitMix64,
        out: &mut [i32],
    ) {
        let out = &mut out[..cols];
        out.fill(self.background);
        let ny = (y as f32 + 0.5) / rows as f32 * 2.0 - 1.0;
        for e in &self.shapes {
            if e.rx <= 0.0 || e.ry <= 0.0 {
                continue;
            }
            let dy = (ny - e.cy) / e.ry;
            if dy.abs() >= 1.0 {
                continue;
            }
            let half = e.rx * (1.0 - dy * dy).sqrt();
            // pixel x centre: nx = (x + 0.5) / cols * 2 - 1; inside when |nx - cx| < half
            let to_px = |nx: f32| (nx + 1.0) * 0.5 * cols as f32 - 0.5;
            let x0 = to_px(e.cx - half).ceil().max(0.0) as usize;
            let x1 = (to_px(e.cx + half).floor() + 1.0).clamp(0.0, cols as f32) as usize;
            if x0 < x1 {
                out[x0..x1].fill(e.value);
            }
        }
        // 16 random bits per pixel, four pixels per PRNG step
        let a = self.noise.max(0);
        let span = (2 * a + 1) as u32;
        for chunk in out.chunks_mut(4) {
            let mut r = rng.next_u64();
            for v in chunk {
                let n = (((r & 0xFFFF) as u32 * span) >> 16) as i32 - a;
                r >>= 16;
                *v = (*v + n).clamp(0, self.max);
            }
        }
    }

    /// Render a whole frame into memory (for the encapsulated variants).
    pub(crate) fn render(&self, rows: usize, cols: usize, noise_seed: u64) -> Vec<u16> {
        let mut rng = SplitMix64::new(noise_seed);
        let mut row = vec![0i32; cols];
        let mut frame = Vec::with_capacity(rows * cols);
        for y in 0..rows {
            self.render_row(y, rows, cols, &mut rng, &mut row);
            frame.extend(row.iter().map(|&v| v as u16));
        }
        frame
    }

    /// Stream a frame as 16-bit little-endian samples, one row at a time.
    pub(crate) fn stream_u16le(
        &self,
        rows: usize,
        cols: usize,
        noise_seed: u64,
        w: &mut dyn Write,
    ) -> io::Result<()> {
        let mut rng = SplitMix64::new(noise_seed);
        let mut row = vec![0i32; cols];
        let mut bytes = vec![0u8; cols * 2];
        for y in 0..rows {
            self.render_row(y, rows, cols, &mut rng, &mut row);
            for (b, &v) in bytes.chunks_exact_mut(2).zip(row.iter()) {
                b.copy_from_slice(&(v as u16).to_le_bytes());
            }
            w.write_all(&bytes)?;
        }
        Ok(())
    }
}

/// CT stored value for a Hounsfield unit with RescaleIntercept -1024, slope 1.
const fn hu(v: i32) -> i32 {
    v + 1024
}

/// Axial chest CT slice `k` of `n` (stored values, 12 bits, intercept -1024).
pub(crate) fn ct_chest(k: u32, n: u32) -> Phantom {
    let t = if n > 1 {
        k as f32 / (n - 1) as f32
    } else {
        0.5
    };
    let s = 0.6 + 0.4 * (std::f32::consts::PI * t).sin(); // lungs widest mid-stack
    let h = 0.5 + 0.5 * (std::f32::consts::PI * (t * 0.8 + 0.1)).sin(); // heart
    let mut shapes = vec![
        // couch
        ellipse(0.0, 0.86, 0.92, 0.025, hu(300)),
        // subcutaneous fat, then muscle/soft tissue
        ellipse(0.0, 0.05, 0.82, 0.60, hu(-100)),
        ellipse(0.0, 0.05, 0.77, 0.55, hu(45)),
        // lungs
        ellipse(-0.38, 0.0, 0.27 * s, 0.40 * s, hu(-850)),
        ellipse(0.38, 0.0, 0.25 * s, 0.38 * s, hu(-860)),
        // heart
        ellipse(0.08, 0.02, 0.24 * h, 0.21 * h, hu(40)),
        // aorta (contrast)
        ellipse(-0.06, 0.26, 0.065, 0.065, hu(260)),
        // vertebral body, spinal canal
        ellipse(0.0, 0.43, 0.11, 0.095, hu(700)),
        ellipse(0.0, 0.55, 0.035, 0.03, hu(15)),
        // sternum
        ellipse(0.0, -0.46, 0.05, 0.03, hu(550)),
    ];
    // a small nodule in the right lung on the middle slices
    if (0.4..=0.6).contains(&t) {
        shapes.push(ellipse(0.45, -0.12, 0.035, 0.035, hu(30)));
    }
    Phantom {
        background: hu(-1000),
        shapes,
        noise: 12,
        max: 4095,
    }
}

/// Axial T2-ish brain MR slice `k` of `n` (12 bits).
pub(crate) fn mr_brain(k: u32, n: u32) -> Phantom {
    let t = if n > 1 {
        k as f32 / (n - 1) as f32
    } else {
        0.5
    };
    let s = 0.55 + 0.45 * (std::f32::consts::PI * t).sin();
    Phantom {
        background: 0,
        shapes: vec![
            ellipse(0.0, 0.0, 0.76 * s + 0.1, 0.90 * s + 0.05, 650), // scalp
            ellipse(0.0, 0.0, 0.72 * s + 0.1, 0.86 * s + 0.05, 90),  // skull
            ellipse(0.0, 0.0, 0.69 * s + 0.1, 0.83 * s + 0.05, 1500), // CSF
            ellipse(0.0, 0.0, 0.66 * s + 0.1, 0.80 * s + 0.05, 900), // grey matter
            ellipse(0.0, 0.02, 0.52 * s + 0.05, 0.64 * s + 0.05, 620), // white matter
            ellipse(-0.12, -0.05, 0.07 * s, 0.22 * s, 1600),         // ventricles
            ellipse(0.12, -0.05, 0.07 * s, 0.22 * s, 1600),
        ],
        noise: 25,
        max: 4095,
    }
}

/// PA chest radiograph (12 bits, MONOCHROME2: dense is bright).
pub(crate) fn dx_chest() -> Phantom {
    Phantom {
        background: 120,
        shapes: vec![
            ellipse(0.0, 0.08, 0.86, 0.96, 1900),   // soft tissue
            ellipse(-0.36, -0.08, 0.29, 0.58, 700), // lungs
            ellipse(0.36, -0.08, 0.27, 0.56, 720),
            ellipse(0.0, 0.02, 0.075, 0.86, 3100),  // spine
            ellipse(0.1, 0.28, 0.26, 0.28, 2700),   // heart
            ellipse(-0.3, -0.68, 0.3, 0.028, 3300), // clavicles
            ellipse(0.3, -0.68, 0.3, 0.028, 3300),
        ],
        noise: 30,
        max: 4095,
    }
}

/// Frame `f` of `frames` of an angiography-like run: a contrast bolus moving through a
/// vessel across the field of view.
pub(crate) fn angio_frame(f: u32, frames: u32) -> Phantom {
    let t = if frames > 1 {
        f as f32 / (frames - 1) as f32
    } else {
        0.5
    };
    let x = -0.8 + 1.6 * t;
    Phantom {
        background: 300,
        shapes: vec![
            ellipse(0.0, 0.0, 0.85, 0.85, 1200),
            ellipse(0.0, 0.0, 0.9, 0.05, 1500), // vessel
            ellipse(x, 0.0, 0.12, 0.06, 3500),  // bolus
        ],
        noise: 15,
        max: 4095,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_equals_render() {
        let p = ct_chest(3, 10);
        let frame = p.render(64, 48, 99);
        let mut bytes = Vec::new();
        p.stream_u16le(64, 48, 99, &mut bytes).unwrap();
        let back: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(frame, back);
        // the body is visible: the centre is soft tissue, the corner air
        let centre = frame[32 * 48 + 24] as i32 - 1024;
        let corner = frame[0] as i32 - 1024;
        assert!((-200..200).contains(&centre), "{centre}");
        assert!(corner < -950, "{corner}");
    }
}
