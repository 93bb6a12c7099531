//! Deterministic generator of realistic synthetic DICOM studies, for tests and benchmarks
//! (`beeldbrug generate`).
//!
//! Every byte is a function of [`GenerateArgs`]: UIDs are `2.25.<decimal of 128 bits>`
//! derived from the seed, dates and times are fixed per patient/study, and the phantom
//! noise comes from a seeded PRNG. Generating twice gives byte-identical files.
//!
//! What one run writes, per patient (see [`generate`]):
//!
//! - a CT study: an axial chest series (512×512, 16-bit, Explicit VR Little Endian), plus
//!   with `--implicit` an Implicit VR Little Endian copy (own series and SOP Instance
//!   UIDs), and with `--encapsulated` a JPEG Baseline (8-bit) and an RLE Lossless copy;
//! - an MR study: an axial brain series (256×256, 16-bit);
//! - for the first patient only: with `--dx` a 3072×3072 chest radiograph in its own
//!   study, and with `--multiframe-frames N` one Multi-frame Grayscale Word Secondary
//!   Capture instance in its own study.
//!
//! Patients cycle through a fixed list of names, among them Dutch diacritics. The first
//! two are both `Müller^Zoë` (different BSNs): one stored as ISO_IR 100 (Latin-1 bytes
//! on disk), one as ISO_IR 192 (UTF-8 bytes), so a query for that name must match both.
//! Patient IDs are fictitious but valid BSNs (11-test) in the `9999xxxxx` test block.
//!
//! Native pixel data is never held in memory as a whole: the data set is written with
//! `dicom-object` without Pixel Data, then the (7FE0,0010) header is appended by hand and
//! the frames are rendered and written one row at a time through a `BufWriter`, so a
//! multi-frame instance of several GB needs only a few rows of memory.
//! Text is encoded by `dicom-object`'s writer according to the data set's Specific
//! Character Set (it switches its text codec when it writes (0008,0005)).

mod phantom;
mod rle;
mod rng;

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use rng::{derive, uid, SplitMix64};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// CT Image Storage.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// MR Image Storage.
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
/// Digital X-Ray Image Storage - For Presentation.
pub const DX_IMAGE_STORAGE_PRESENTATION: &str = "1.2.840.10008.5.1.4.1.1.1.1";
/// Multi-frame Grayscale Word Secondary Capture Image Storage.
pub const SC_MULTIFRAME_GRAYSCALE_WORD: &str = "1.2.840.10008.5.1.4.1.1.7.3";

/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Implicit VR Little Endian.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// JPEG Baseline (Process 1).
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
/// RLE Lossless.
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Assigning authority of the Dutch BSN (Issuer of Patient ID).
pub const BSN_ISSUER: &str = "2.16.840.1.113883.2.4.6.3";
/// Implementation Class UID written in the file meta group (fixed, made up, `2.25.` root).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.163474161424785713394406125236815870912";
/// Implementation Version Name written in the file meta group.
pub const IMPLEMENTATION_VERSION_NAME: &str = "BEELDBRUG_GEN1";

/// Largest native Pixel Data value length (an even `u32` below the undefined length).
const MAX_PIXEL_DATA_LEN: u64 = 0xFFFF_FFFE;
/// The BSN test block holds ~9,000 valid numbers; stay well below that.
const MAX_PATIENTS: u32 = 5000;

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Output directory (created)
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Deterministic seed
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of patients (each gets a CT and an MR study)
    #[arg(long, default_value_t = 2)]
    pub patients: u32,
    /// CT slices per CT series (512x512, 16-bit)
    #[arg(long, default_value_t = 20)]
    pub ct_slices: u32,
    /// MR slices per MR series (256x256 16-bit)
    #[arg(long, default_value_t = 10)]
    pub mr_slices: u32,
    /// Also write a large DX (3072x3072, 16-bit)
    #[arg(long)]
    pub dx: bool,
    /// Frames in a multi-frame instance (0 = none); --frame-size sets rows=cols
    #[arg(long, default_value_t = 0)]
    pub multiframe_frames: u32,
    /// Rows and columns of each multi-frame frame
    #[arg(long, default_value_t = 256)]
    pub frame_size: u32,
    /// Also write JPEG-baseline (1.2.840.10008.1.2.4.50) and RLE (1.2.840.10008.1.2.5) encapsulated variants
    #[arg(long)]
    pub encapsulated: bool,
    /// Also write Implicit VR Little Endian copies of the CT
    #[arg(long)]
    pub implicit: bool,
}

impl GenerateArgs {
    /// The CLI defaults (seed 1, 2 patients, 20 CT and 10 MR slices, no extras).
    pub fn with_defaults(out: impl Into<PathBuf>) -> Self {
        GenerateArgs {
            out: out.into(),
            seed: 1,
            patients: 2,
            ct_slices: 20,
            mr_slices: 10,
            dx: false,
            multiframe_frames: 0,
            frame_size: 256,
            encapsulated: false,
            implicit: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    #[error("pixel data of {bytes} bytes does not fit a 32-bit element length (max {MAX_PIXEL_DATA_LEN})")]
    PixelDataTooLarge { bytes: u64 },
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("building file meta group for {}: {source}", path.display())]
    Meta {
        path: PathBuf,
        #[source]
        source: Box<dicom_object::meta::Error>,
    },
    #[error("writing DICOM data set to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: Box<dicom_object::WriteError>,
    },
    #[error("JPEG encoding failed: {0}")]
    Jpeg(#[from] jpeg_encoder::EncodingError),
    #[error("transfer syntax {0} is not in the registry")]
    UnknownTransferSyntax(&'static str),
}

/// One file written by [`generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub path: PathBuf,
    pub patient_id: String,
    /// Patient Name as Unicode (whatever the bytes on disk).
    pub patient_name: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    /// Specific Character Set written (`ISO_IR 100`, `ISO_IR 192`), or empty when the
    /// attribute is absent (default repertoire).
    pub charset: String,
}

/// Does `bsn` pass the BSN 11-test (elfproef)? The trust policy's
/// [`is_bsn`](crate::trust::policy::is_bsn), under the name the generator's callers know.
pub use crate::trust::policy::is_bsn as bsn_is_valid;

/// A valid, fictitious BSN derived deterministically from `rng_seed`.
///
/// Always in the `9999xxxxx` block, which is used for test persons (RvIG/DigiD test
/// sets) and is recognisable as test data at a glance.
pub fn fictitious_bsn(rng_seed: u64) -> String {
    let mut rng = SplitMix64::new(rng::mix64(rng_seed ^ 0x4253_4E42_534E_4253));
    loop {
        let digits = format!("9999{:04}", rng.below(10_000));
        let weighted: u32 = digits
            .bytes()
            .zip((2..=9).rev())
            .map(|(c, w)| u32::from(c - b'0') * w)
            .sum();
        let check = weighted % 11;
        if check < 10 {
            return format!("{digits}{check}");
        }
    }
}

/// Write the synthetic studies described by `args` under `args.out` and list the files.
///
/// Layout: `out/<patient_id>/<study_uid>/<series_uid>/<sop_uid>.dcm`.
pub fn generate(args: &GenerateArgs) -> Result<Vec<GeneratedFile>, GenerateError> {
    validate(args)?;
    std::fs::create_dir_all(&args.out).map_err(|source| GenerateError::Io {
        path: args.out.clone(),
        source,
    })?;
    let mut g = Generator {
        args,
        files: Vec::new(),
    };
    let mut used_bsns = HashSet::new();
    for p in 0..args.patients {
        let patient = Patient::new(args.seed, p, &mut used_bsns);
        if args.ct_slices > 0 {
            g.ct_study(&patient)?;
        }
        if args.mr_slices > 0 {
            g.mr_study(&patient)?;
        }
        if p == 0 && args.dx {
            g.dx_study(&patient)?;
        }
        if p == 0 && args.multiframe_frames > 0 {
            g.multiframe_study(&patient)?;
        }
    }
    Ok(g.files)
}

fn validate(args: &GenerateArgs) -> Result<(), GenerateError> {
    if args.patients > MAX_PATIENTS {
        return Err(GenerateError::InvalidArgs(format!(
            "at most {MAX_PATIENTS} patients (the fictitious BSN block is small)"
        )));
    }
    if args.ct_slices > 100_000 || args.mr_slices > 100_000 {
        return Err(GenerateError::InvalidArgs(
            "at most 100000 slices per series".into(),
        ));
    }
    if args.multiframe_frames > 0 {
        if args.frame_size == 0 || args.frame_size > 65535 {
            return Err(GenerateError::InvalidArgs(
                "--frame-size must be in 1..=65535".into(),
            ));
        }
        let bytes = u64::from(args.frame_size).pow(2) * 2 * u64::from(args.multiframe_frames);
        if bytes > MAX_PIXEL_DATA_LEN {
            return Err(GenerateError::PixelDataTooLarge { bytes });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// patients, studies, series

/// Key domains for [`derive`] / [`uid`], so no two purposes share a value.
mod key {
    pub const STUDY: u64 = 1;
    pub const SERIES: u64 = 2;
    pub const SOP: u64 = 3;
    pub const FRAME_OF_REFERENCE: u64 = 4;
    pub const NOISE: u64 = 5;
    pub const BSN: u64 = 6;
    pub const ACCESSION: u64 = 7;
}

/// Study slots within a patient (part of every UID key).
const STUDY_CT: u64 = 0;
const STUDY_MR: u64 = 1;
const STUDY_DX: u64 = 2;
const STUDY_MF: u64 = 3;

struct PatientTemplate {
    name: &'static str,
    sex: &'static str,
    birth_date: &'static str,
    charset: Option<&'static str>,
}

const PATIENTS: [PatientTemplate; 8] = [
    PatientTemplate {
        name: "Müller^Zoë",
        sex: "F",
        birth_date: "19780312",
        charset: Some("ISO_IR 100"),
    },
    PatientTemplate {
        name: "Müller^Zoë",
        sex: "F",
        birth_date: "19851120",
        charset: Some("ISO_IR 192"),
    },
    PatientTemplate {
        name: "de Vries^Jérôme",
        sex: "M",
        birth_date: "19620705",
        charset: Some("ISO_IR 100"),
    },
    PatientTemplate {
        name: "Ørsted^Anaïs",
        sex: "F",
        birth_date: "19900228",
        charset: Some("ISO_IR 192"),
    },
    PatientTemplate {
        name: "Jansen^Pieter",
        sex: "M",
        birth_date: "19551017",
        charset: None,
    },
    PatientTemplate {
        name: "van den Berg^Joël",
        sex: "M",
        birth_date: "19730909",
        charset: Some("ISO_IR 100"),
    },
    PatientTemplate {
        name: "Bakker^Eline",
        sex: "F",
        birth_date: "20010601",
        charset: Some("ISO_IR 192"),
    },
    PatientTemplate {
        name: "Smit^Daan",
        sex: "M",
        birth_date: "19990114",
        charset: Some("ISO_IR 100"),
    },
];

struct Patient {
    index: u64,
    id: String,
    name: &'static str,
    sex: &'static str,
    birth_date: String,
    charset: Option<&'static str>,
    referring: &'static str,
}

impl Patient {
    fn new(seed: u64, p: u32, used: &mut HashSet<String>) -> Patient {
        let t = &PATIENTS[p as usize % PATIENTS.len()];
        // later rounds through the list get older birth years
        let shift = (p as usize / PATIENTS.len()) as u32 % 40;
        let year: u32 = t.birth_date[..4].parse().unwrap_or(1970) - shift;
        let birth_date = format!("{year}{}", &t.birth_date[4..]);
        let mut attempt = 0u64;
        let id = loop {
            let bsn = fictitious_bsn(derive(seed, &[key::BSN, u64::from(p), attempt]));
            if used.insert(bsn.clone()) {
                break bsn;
            }
            attempt += 1;
        };
        Patient {
            index: u64::from(p),
            id,
            name: t.name,
            sex: t.sex,
            birth_date,
            charset: t.charset,
            referring: if t.charset.is_some() {
                "Verhoeven^Noël^^dr."
            } else {
                "Verhoeven^Noel^^dr."
            },
        }
    }
}

struct Study {
    slot: u64,
    uid: String,
    date: String,
    time: String,
    accession: String,
    id: String,
    description: &'static str,
    frame_of_reference: String,
}

impl Study {
    fn new(seed: u64, patient: &Patient, slot: u64, description: &'static str) -> Study {
        let n = patient.index * 3 + slot;
        let date = format!(
            "{:04}{:02}{:02}",
            2024 + n / (28 * 12),
            1 + (n / 28) % 12,
            1 + n % 28
        );
        let secs = 8 * 3600 + (patient.index * 1973 + slot * 4111) % (9 * 3600);
        let acc = derive(seed, &[key::ACCESSION, patient.index, slot]) % 10_000_000_000;
        Study {
            slot,
            uid: uid(seed, &[key::STUDY, patient.index, slot]),
            date,
            time: tm(secs),
            accession: format!("BB{acc:010}"),
            id: format!("{}", 1001 + n),
            description,
            frame_of_reference: uid(seed, &[key::FRAME_OF_REFERENCE, patient.index, slot]),
        }
    }
}

struct Series {
    number: u32,
    uid: String,
    modality: &'static str,
    description: String,
    body_part: &'static str,
    time: String,
}

impl Series {
    fn new(
        seed: u64,
        patient: &Patient,
        study: &Study,
        number: u32,
        modality: &'static str,
        description: impl Into<String>,
        body_part: &'static str,
    ) -> Series {
        let secs = secs_of(&study.time) + 60 + u64::from(number) * 97;
        Series {
            number,
            uid: uid(
                seed,
                &[key::SERIES, patient.index, study.slot, u64::from(number)],
            ),
            modality,
            description: description.into(),
            body_part,
            time: tm(secs.min(23 * 3600 + 59 * 60)),
        }
    }

    fn sop_uid(&self, seed: u64, patient: &Patient, study: &Study, instance: u32) -> String {
        uid(
            seed,
            &[
                key::SOP,
                patient.index,
                study.slot,
                u64::from(self.number),
                u64::from(instance),
            ],
        )
    }
}

fn tm(secs: u64) -> String {
    format!(
        "{:02}{:02}{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

fn secs_of(tm: &str) -> u64 {
    let f = |r: std::ops::Range<usize>| tm.get(r).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    f(0..2) * 3600 + f(2..4) * 60 + f(4..6)
}

// ---------------------------------------------------------------------------------------
// data set building

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn put_us(obj: &mut InMemDicomObject, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

/// Pixel description of one instance (Image Pixel module).
#[derive(Clone, Copy)]
struct PixelFormat {
    rows: u16,
    cols: u16,
    bits_allocated: u16,
    bits_stored: u16,
}

impl PixelFormat {
    fn frame_bytes(&self) -> u64 {
        u64::from(self.rows) * u64::from(self.cols) * u64::from(self.bits_allocated / 8)
    }
}

/// Everything one instance has in common: SOP common, patient, general study, general
/// series, general equipment, general image and image pixel modules.
#[allow(clippy::too_many_arguments)]
fn base_object(
    patient: &Patient,
    study: &Study,
    series: &Series,
    sop_class: &str,
    sop_uid: &str,
    instance: u32,
    image_type: &str,
    px: PixelFormat,
) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    // SOP common
    if let Some(cs) = patient.charset {
        put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, cs);
    }
    put_str(&mut o, tags::IMAGE_TYPE, VR::CS, image_type);
    put_str(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &study.date);
    put_str(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &series.time);
    put_str(&mut o, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    // general study
    put_str(&mut o, tags::STUDY_DATE, VR::DA, &study.date);
    put_str(&mut o, tags::SERIES_DATE, VR::DA, &study.date);
    put_str(&mut o, tags::CONTENT_DATE, VR::DA, &study.date);
    put_str(&mut o, tags::STUDY_TIME, VR::TM, &study.time);
    put_str(&mut o, tags::SERIES_TIME, VR::TM, &series.time);
    put_str(&mut o, tags::CONTENT_TIME, VR::TM, &series.time);
    put_str(&mut o, tags::ACCESSION_NUMBER, VR::SH, &study.accession);
    put_str(&mut o, tags::MODALITY, VR::CS, series.modality);
    put_str(&mut o, tags::MANUFACTURER, VR::LO, "Beeldbrug Synthetic");
    put_str(
        &mut o,
        tags::INSTITUTION_NAME,
        VR::LO,
        "Testziekenhuis Utrecht",
    );
    put_str(
        &mut o,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        patient.referring,
    );
    put_str(&mut o, tags::STATION_NAME, VR::SH, "BBGEN01");
    put_str(&mut o, tags::STUDY_DESCRIPTION, VR::LO, study.description);
    put_str(
        &mut o,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &series.description,
    );
    put_str(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "Phantom 1");
    // patient
    put_str(&mut o, tags::PATIENT_NAME, VR::PN, patient.name);
    put_str(&mut o, tags::PATIENT_ID, VR::LO, &patient.id);
    put_str(&mut o, tags::ISSUER_OF_PATIENT_ID, VR::LO, BSN_ISSUER);
    put_str(
        &mut o,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        &patient.birth_date,
    );
    put_str(&mut o, tags::PATIENT_SEX, VR::CS, patient.sex);
    put_str(&mut o, tags::BODY_PART_EXAMINED, VR::CS, series.body_part);
    // study / series identification
    put_str(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &study.uid);
    put_str(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &series.uid);
    put_str(&mut o, tags::STUDY_ID, VR::SH, &study.id);
    put_str(
        &mut o,
        tags::SERIES_NUMBER,
        VR::IS,
        &series.number.to_string(),
    );
    put_str(&mut o, tags::ACQUISITION_NUMBER, VR::IS, "1");
    put_str(&mut o, tags::INSTANCE_NUMBER, VR::IS, &instance.to_string());
    // image pixel
    put_us(&mut o, tags::SAMPLES_PER_PIXEL, 1);
    put_str(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    put_us(&mut o, tags::ROWS, px.rows);
    put_us(&mut o, tags::COLUMNS, px.cols);
    put_us(&mut o, tags::BITS_ALLOCATED, px.bits_allocated);
    put_us(&mut o, tags::BITS_STORED, px.bits_stored);
    put_us(&mut o, tags::HIGH_BIT, px.bits_stored - 1);
    put_us(&mut o, tags::PIXEL_REPRESENTATION, 0);
    o
}

/// Image Plane module for an axial slice.
fn image_plane(
    o: &mut InMemDicomObject,
    study: &Study,
    origin: f64,
    z: f64,
    spacing: &str,
    thickness: &str,
) {
    put_str(o, tags::PATIENT_POSITION, VR::CS, "HFS");
    put_str(o, tags::SLICE_THICKNESS, VR::DS, thickness);
    put_str(
        o,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &format!("{origin}\\{origin}\\{z}"),
    );
    put_str(
        o,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        "1\\0\\0\\0\\1\\0",
    );
    put_str(
        o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &study.frame_of_reference,
    );
    put_str(o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    put_str(o, tags::SLICE_LOCATION, VR::DS, &z.to_string());
    put_str(
        o,
        tags::PIXEL_SPACING,
        VR::DS,
        &format!("{spacing}\\{spacing}"),
    );
}

fn put_window(o: &mut InMemDicomObject, center: &str, width: &str, explanation: &str) {
    put_str(o, tags::WINDOW_CENTER, VR::DS, center);
    put_str(o, tags::WINDOW_WIDTH, VR::DS, width);
    put_str(
        o,
        tags::WINDOW_CENTER_WIDTH_EXPLANATION,
        VR::LO,
        explanation,
    );
}

// ---------------------------------------------------------------------------------------
// the generator

#[derive(Clone, Copy, PartialEq, Eq)]
enum CtVariant {
    Explicit,
    Implicit,
    Jpeg,
    Rle,
}

/// CT geometry: 500 mm field of view on 512 pixels, 2.5 mm slices.
const CT_SIZE: u16 = 512;
const CT_SPACING: &str = "0.9765625";
const CT_ORIGIN: f64 = -249.51171875;
const CT_THICKNESS: f64 = 2.5;
/// MR geometry: 240 mm on 256 pixels, 5 mm slices 6 mm apart.
const MR_SIZE: u16 = 256;
const MR_SPACING: &str = "0.9375";
const MR_ORIGIN: f64 = -119.53125;
const DX_SIZE: u16 = 3072;

struct Generator<'a> {
    args: &'a GenerateArgs,
    files: Vec<GeneratedFile>,
}

type NativeWriter<'a> = &'a mut dyn FnMut(&mut dyn Write) -> io::Result<()>;

impl Generator<'_> {
    fn seed(&self) -> u64 {
        self.args.seed
    }

    fn ct_study(&mut self, patient: &Patient) -> Result<(), GenerateError> {
        let seed = self.seed();
        let study = Study::new(seed, patient, STUDY_CT, "CT thorax met contrast");
        let mut variants = vec![(1, CtVariant::Explicit, "Thorax 2.5 mm")];
        if self.args.implicit {
            variants.push((2, CtVariant::Implicit, "Thorax 2.5 mm (Implicit VR)"));
        }
        if self.args.encapsulated {
            variants.push((3, CtVariant::Jpeg, "Thorax 2.5 mm (JPEG Baseline)"));
            variants.push((4, CtVariant::Rle, "Thorax 2.5 mm (RLE Lossless)"));
        }
        for (number, variant, description) in variants {
            let series = Series::new(seed, patient, &study, number, "CT", description, "CHEST");
            for k in 0..self.args.ct_slices {
                self.ct_slice(patient, &study, &series, variant, k)?;
            }
        }
        Ok(())
    }

    fn ct_slice(
        &mut self,
        patient: &Patient,
        study: &Study,
        series: &Series,
        variant: CtVariant,
        k: u32,
    ) -> Result<(), GenerateError> {
        let seed = self.seed();
        let n = self.args.ct_slices;
        let instance = k + 1;
        let sop_uid = series.sop_uid(seed, patient, study, instance);
        let eight_bit = variant == CtVariant::Jpeg;
        let px = PixelFormat {
            rows: CT_SIZE,
            cols: CT_SIZE,
            bits_allocated: if eight_bit { 8 } else { 16 },
            bits_stored: if eight_bit { 8 } else { 12 },
        };
        let image_type = if eight_bit {
            "DERIVED\\SECONDARY\\AXIAL"
        } else {
            "ORIGINAL\\PRIMARY\\AXIAL"
        };
        let mut o = base_object(
            patient,
            study,
            series,
            CT_IMAGE_STORAGE,
            &sop_uid,
            instance,
            image_type,
            px,
        );
        let z = 100.0 - f64::from(k) * CT_THICKNESS;
        image_plane(
            &mut o,
            study,
            CT_ORIGIN,
            z,
            CT_SPACING,
            &CT_THICKNESS.to_string(),
        );
        put_str(&mut o, tags::KVP, VR::DS, "120");
        put_str(&mut o, tags::CONVOLUTION_KERNEL, VR::SH, "B30f");
        put_window(&mut o, "40\\-600", "400\\1500", "MEDIASTINUM\\LUNG");
        put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "HU");

        // the same noise seed for every variant, so copies hold the same image
        let noise_seed = derive(seed, &[key::NOISE, patient.index, STUDY_CT, u64::from(k)]);
        let phantom = phantom::ct_chest(k, n);
        let (rows, cols) = (usize::from(px.rows), usize::from(px.cols));
        let ts = match variant {
            CtVariant::Explicit => EXPLICIT_VR_LE,
            CtVariant::Implicit => IMPLICIT_VR_LE,
            CtVariant::Jpeg => JPEG_BASELINE,
            CtVariant::Rle => RLE_LOSSLESS,
        };
        let path = self.path_for(patient, study, series, &sop_uid);
        match variant {
            CtVariant::Explicit | CtVariant::Implicit => {
                put_str(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
                put_str(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
                let mut stream =
                    |w: &mut dyn Write| phantom.stream_u16le(rows, cols, noise_seed, w);
                write_file(
                    &path,
                    &o,
                    CT_IMAGE_STORAGE,
                    &sop_uid,
                    ts,
                    Some((px.frame_bytes(), &mut stream)),
                )?;
            }
            CtVariant::Rle => {
                put_str(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
                put_str(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
                let frame = phantom.render(rows, cols, noise_seed);
                let fragment = rle::encode_u16(&frame, rows, cols);
                put_fragments(&mut o, vec![fragment]);
                write_file(&path, &o, CT_IMAGE_STORAGE, &sop_uid, ts, None)?;
            }
            CtVariant::Jpeg => {
                // window [-160, 240] HU onto 0..=255; the rescale maps it back to HU
                let frame = phantom.render(rows, cols, noise_seed);
                let bytes: Vec<u8> = frame
                    .iter()
                    .map(|&v| {
                        let hu = i32::from(v) - 1024;
                        ((hu + 160) * 255 + 200).div_euclid(400).clamp(0, 255) as u8
                    })
                    .collect();
                let mut jpeg = Vec::new();
                jpeg_encoder::Encoder::new(&mut jpeg, 90).encode(
                    &bytes,
                    px.cols,
                    px.rows,
                    jpeg_encoder::ColorType::Luma,
                )?;
                let ratio = bytes.len() as f64 / jpeg.len() as f64;
                put_str(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "-160");
                put_str(&mut o, tags::RESCALE_SLOPE, VR::DS, "1.5686274510");
                put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01");
                put_str(
                    &mut o,
                    tags::LOSSY_IMAGE_COMPRESSION_RATIO,
                    VR::DS,
                    &format!("{ratio:.2}"),
                );
                put_str(
                    &mut o,
                    tags::LOSSY_IMAGE_COMPRESSION_METHOD,
                    VR::CS,
                    "ISO_10918_1",
                );
                put_str(
                    &mut o,
                    tags::DERIVATION_DESCRIPTION,
                    VR::ST,
                    "Windowed to 8 bits (C 40, W 400) and JPEG Baseline compressed",
                );
                put_fragments(&mut o, vec![jpeg]);
                write_file(&path, &o, CT_IMAGE_STORAGE, &sop_uid, ts, None)?;
            }
        }
        self.record(path, patient, study, series, sop_uid, CT_IMAGE_STORAGE, ts);
        Ok(())
    }

    fn mr_study(&mut self, patient: &Patient) -> Result<(), GenerateError> {
        let seed = self.seed();
        let study = Study::new(seed, patient, STUDY_MR, "MRI hersenen");
        let series = Series::new(seed, patient, &study, 1, "MR", "T2 TSE axiaal", "HEAD");
        let n = self.args.mr_slices;
        for k in 0..n {
            let instance = k + 1;
            let sop_uid = series.sop_uid(seed, patient, &study, instance);
            let px = PixelFormat {
                rows: MR_SIZE,
                cols: MR_SIZE,
                bits_allocated: 16,
                bits_stored: 12,
            };
            let mut o = base_object(
                patient,
                &study,
                &series,
                MR_IMAGE_STORAGE,
                &sop_uid,
                instance,
                "ORIGINAL\\PRIMARY\\M\\ND",
                px,
            );
            let z = 60.0 - f64::from(k) * 6.0;
            image_plane(&mut o, &study, MR_ORIGIN, z, MR_SPACING, "5");
            put_str(&mut o, tags::SCANNING_SEQUENCE, VR::CS, "SE");
            put_str(&mut o, tags::SEQUENCE_VARIANT, VR::CS, "SK");
            put_str(&mut o, tags::SCAN_OPTIONS, VR::CS, "");
            put_str(&mut o, tags::MR_ACQUISITION_TYPE, VR::CS, "2D");
            put_str(&mut o, tags::SPACING_BETWEEN_SLICES, VR::DS, "6");
            put_str(&mut o, tags::REPETITION_TIME, VR::DS, "4000");
            put_str(&mut o, tags::ECHO_TIME, VR::DS, "100");
            put_str(&mut o, tags::ECHO_TRAIN_LENGTH, VR::IS, "16");
            put_str(&mut o, tags::IMAGED_NUCLEUS, VR::SH, "1H");
            put_str(&mut o, tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "1.5");
            put_window(&mut o, "800", "1600", "");
            let noise_seed = derive(seed, &[key::NOISE, patient.index, STUDY_MR, u64::from(k)]);
            let phantom = phantom::mr_brain(k, n);
            let path = self.path_for(patient, &study, &series, &sop_uid);
            let (rows, cols) = (usize::from(px.rows), usize::from(px.cols));
            let mut stream = |w: &mut dyn Write| phantom.stream_u16le(rows, cols, noise_seed, w);
            write_file(
                &path,
                &o,
                MR_IMAGE_STORAGE,
                &sop_uid,
                EXPLICIT_VR_LE,
                Some((px.frame_bytes(), &mut stream)),
            )?;
            self.record(
                path,
                patient,
                &study,
                &series,
                sop_uid,
                MR_IMAGE_STORAGE,
                EXPLICIT_VR_LE,
            );
        }
        Ok(())
    }

    fn dx_study(&mut self, patient: &Patient) -> Result<(), GenerateError> {
        let seed = self.seed();
        let study = Study::new(seed, patient, STUDY_DX, "X-thorax");
        let series = Series::new(seed, patient, &study, 1, "DX", "Thorax PA", "CHEST");
        let sop_uid = series.sop_uid(seed, patient, &study, 1);
        let px = PixelFormat {
            rows: DX_SIZE,
            cols: DX_SIZE,
            bits_allocated: 16,
            bits_stored: 12,
        };
        let mut o = base_object(
            patient,
            &study,
            &series,
            DX_IMAGE_STORAGE_PRESENTATION,
            &sop_uid,
            1,
            "ORIGINAL\\PRIMARY",
            px,
        );
        put_str(
            &mut o,
            tags::PRESENTATION_INTENT_TYPE,
            VR::CS,
            "FOR PRESENTATION",
        );
        put_str(&mut o, tags::KVP, VR::DS, "125");
        put_str(&mut o, tags::IMAGER_PIXEL_SPACING, VR::DS, "0.139\\0.139");
        put_str(&mut o, tags::DETECTOR_TYPE, VR::CS, "SCINTILLATOR");
        put_str(&mut o, tags::VIEW_POSITION, VR::CS, "PA");
        put_str(&mut o, tags::PATIENT_ORIENTATION, VR::CS, "R\\F");
        put_str(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        put_str(&mut o, tags::IMAGE_LATERALITY, VR::CS, "U");
        put_str(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "0");
        put_str(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
        put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "US");
        put_window(&mut o, "2048", "4096", "");
        put_str(&mut o, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
        let noise_seed = derive(seed, &[key::NOISE, patient.index, STUDY_DX, 0]);
        let phantom = phantom::dx_chest();
        let path = self.path_for(patient, &study, &series, &sop_uid);
        let (rows, cols) = (usize::from(px.rows), usize::from(px.cols));
        let mut stream = |w: &mut dyn Write| phantom.stream_u16le(rows, cols, noise_seed, w);
        write_file(
            &path,
            &o,
            DX_IMAGE_STORAGE_PRESENTATION,
            &sop_uid,
            EXPLICIT_VR_LE,
            Some((px.frame_bytes(), &mut stream)),
        )?;
        self.record(
            path,
            patient,
            &study,
            &series,
            sop_uid,
            DX_IMAGE_STORAGE_PRESENTATION,
            EXPLICIT_VR_LE,
        );
        Ok(())
    }

    fn multiframe_study(&mut self, patient: &Patient) -> Result<(), GenerateError> {
        let seed = self.seed();
        let frames = self.args.multiframe_frames;
        let size = self.args.frame_size as u16; // validated: 1..=65535
        let study = Study::new(seed, patient, STUDY_MF, "Angiografie (multi-frame)");
        let series = Series::new(seed, patient, &study, 1, "OT", "Contrast run", "HEART");
        let sop_uid = series.sop_uid(seed, patient, &study, 1);
        let px = PixelFormat {
            rows: size,
            cols: size,
            bits_allocated: 16,
            bits_stored: 12,
        };
        let mut o = base_object(
            patient,
            &study,
            &series,
            SC_MULTIFRAME_GRAYSCALE_WORD,
            &sop_uid,
            1,
            "DERIVED\\SECONDARY",
            px,
        );
        put_str(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
        put_str(&mut o, tags::NUMBER_OF_FRAMES, VR::IS, &frames.to_string());
        o.put(DataElement::new(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::Tags([tags::FRAME_TIME].into_iter().collect()),
        ));
        put_str(&mut o, tags::FRAME_TIME, VR::DS, "33.3");
        put_str(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        put_str(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "0");
        put_str(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
        put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "US");
        put_window(&mut o, "2048", "4096", "");
        let (rows, cols) = (usize::from(px.rows), usize::from(px.cols));
        let total = px.frame_bytes() * u64::from(frames);
        let path = self.path_for(patient, &study, &series, &sop_uid);
        let mut stream = |w: &mut dyn Write| {
            for f in 0..frames {
                let noise_seed = derive(seed, &[key::NOISE, patient.index, STUDY_MF, u64::from(f)]);
                phantom::angio_frame(f, frames).stream_u16le(rows, cols, noise_seed, w)?;
            }
            Ok(())
        };
        write_file(
            &path,
            &o,
            SC_MULTIFRAME_GRAYSCALE_WORD,
            &sop_uid,
            EXPLICIT_VR_LE,
            Some((total, &mut stream)),
        )?;
        self.record(
            path,
            patient,
            &study,
            &series,
            sop_uid,
            SC_MULTIFRAME_GRAYSCALE_WORD,
            EXPLICIT_VR_LE,
        );
        Ok(())
    }

    fn path_for(
        &self,
        patient: &Patient,
        study: &Study,
        series: &Series,
        sop_uid: &str,
    ) -> PathBuf {
        self.args
            .out
            .join(&patient.id)
            .join(&study.uid)
            .join(&series.uid)
            .join(format!("{sop_uid}.dcm"))
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        path: PathBuf,
        patient: &Patient,
        study: &Study,
        series: &Series,
        sop_uid: String,
        sop_class: &str,
        ts: &str,
    ) {
        self.files.push(GeneratedFile {
            path,
            patient_id: patient.id.clone(),
            patient_name: patient.name.to_string(),
            study_uid: study.uid.clone(),
            series_uid: series.uid.clone(),
            sop_uid,
            sop_class_uid: sop_class.to_string(),
            transfer_syntax: ts.to_string(),
            charset: patient.charset.unwrap_or("").to_string(),
        });
    }
}

/// Encapsulated Pixel Data: an empty Basic Offset Table and one fragment per frame,
/// each padded to even length.
fn put_fragments(o: &mut InMemDicomObject, mut fragments: Vec<Vec<u8>>) {
    for f in &mut fragments {
        if f.len() % 2 == 1 {
            f.push(0);
        }
    }
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), fragments)),
    ));
}

/// Counts bytes passed through, so the streamed pixel data can be checked against the
/// length already written in the element header.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Write preamble, file meta group, the data set (via `dicom-object`) and, when given,
/// native Pixel Data streamed by `native.1` (exactly `native.0` bytes).
fn write_file(
    path: &Path,
    obj: &InMemDicomObject,
    sop_class: &str,
    sop_uid: &str,
    ts_uid: &'static str,
    native: Option<(u64, NativeWriter<'_>)>,
) -> Result<(), GenerateError> {
    let io_err = |source| GenerateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or(GenerateError::UnknownTransferSyntax(ts_uid))?;
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_uid)
        .transfer_syntax(ts_uid)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| GenerateError::Meta {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
    if let Some(len) = native.as_ref().map(|n| n.0) {
        if len > MAX_PIXEL_DATA_LEN || len % 2 == 1 {
            return Err(GenerateError::PixelDataTooLarge { bytes: len });
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let file = File::create(path).map_err(io_err)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&[0u8; 128]).map_err(io_err)?;
    w.write_all(b"DICM").map_err(io_err)?;
    meta.write(&mut w).map_err(|e| GenerateError::Meta {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    obj.write_dataset_with_ts(&mut w, ts)
        .map_err(|e| GenerateError::Write {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
    if let Some((len, stream)) = native {
        // (7FE0,0010) OW, length-prefixed; all other elements have lower tags
        w.write_all(&[0xE0, 0x7F, 0x10, 0x00]).map_err(io_err)?;
        if ts_uid != IMPLICIT_VR_LE {
            w.write_all(b"OW\0\0").map_err(io_err)?;
        }
        w.write_all(&(len as u32).to_le_bytes()).map_err(io_err)?;
        let mut counting = Counting {
            inner: &mut w,
            count: 0,
        };
        stream(&mut counting).map_err(io_err)?;
        if counting.count != len {
            return Err(io_err(io::Error::other(format!(
                "internal error: wrote {} pixel data bytes, declared {len}",
                counting.count
            ))));
        }
    }
    w.flush().map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsn_rule() {
        assert!(bsn_is_valid("111222333"));
        assert!(bsn_is_valid("999999990"));
        assert!(!bsn_is_valid("123456789"));
        assert!(!bsn_is_valid("000000000"));
        assert!(!bsn_is_valid("12345678"));
        assert!(!bsn_is_valid("11122233a"));
        for s in 0..1000 {
            let b = fictitious_bsn(s);
            assert!(bsn_is_valid(&b), "{b}");
            assert!(b.starts_with("9999"));
        }
    }

    #[test]
    fn tm_roundtrip() {
        assert_eq!(tm(secs_of("093015")), "093015");
    }
}
