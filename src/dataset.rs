//! Data sets on the wire and on disk: identifiers in and out of the negotiated transfer
//! syntax, and the file meta header of stored instances (PS3.10 7.1).

use dicom_core::Tag;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, FileMetaTable, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("unknown transfer syntax {0}")]
    UnknownTransferSyntax(String),
    #[error("data set does not parse: {0}")]
    Parse(String),
    #[error("data set cannot be encoded: {0}")]
    Encode(String),
    #[error("file {path}: {problem}")]
    File { path: String, problem: String },
}

pub const SPECIFIC_CHARACTER_SET: Tag = Tag(0x0008, 0x0005);
pub const QUERY_RETRIEVE_LEVEL: Tag = Tag(0x0008, 0x0052);
pub const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// The registered transfer syntax of UID `ts`.
pub fn syntax(ts: &str) -> Result<&'static dicom_encoding::TransferSyntax, DatasetError> {
    TransferSyntaxRegistry
        .get(ts.trim_end_matches('\0'))
        .ok_or_else(|| DatasetError::UnknownTransferSyntax(ts.to_string()))
}

/// Decode a data set received on a context with transfer syntax `ts` (identifiers and
/// responses, which hold no Pixel Data), after [`check_structure`]. Text is decoded with the
/// data set's own Specific Character Set.
pub fn decode(bytes: &[u8], ts: &str) -> Result<InMemDicomObject, DatasetError> {
    if check_structure(std::io::Cursor::new(bytes), bytes.len() as u64, ts)?.is_some() {
        return Err(DatasetError::Parse(
            "Pixel Data in an identifier or response".into(),
        ));
    }
    InMemDicomObject::read_dataset_with_ts(bytes, syntax(ts)?)
        .map_err(|e| DatasetError::Parse(e.to_string()))
}

/// Decode an identifier (a PACS's C-FIND match, a peer's C-FIND request) with
/// `default_charset` assumed when it has non-ASCII bytes but no Specific Character Set
/// (PS3.5 6.1.2.3 would make them invalid; many PACS mean Latin-1), and whether it had to be
/// assumed (for the log).
pub fn decode_with_default_charset(
    raw: &[u8],
    ts: &str,
    default_charset: &str,
) -> Result<(InMemDicomObject, bool), String> {
    let obj = decode(raw, ts).map_err(|e| e.to_string())?;
    if obj.element(SPECIFIC_CHARACTER_SET).is_ok() || raw.is_ascii() {
        return Ok((obj, false));
    }
    let mut with = charset_element(ts, default_charset);
    with.extend_from_slice(raw);
    let obj = decode(&with, ts).map_err(|e| e.to_string())?;
    Ok((obj, true))
}

/// (0008,0005) encoded on its own, to put in front of a data set that has none: no element
/// of a C-FIND identifier sorts before it.
fn charset_element(ts: &str, charset: &str) -> Vec<u8> {
    let mut value = charset.as_bytes().to_vec();
    if value.len() % 2 == 1 {
        value.push(b' ');
    }
    let mut out = vec![0x08, 0x00, 0x05, 0x00];
    if ts == crate::sop::IMPLICIT_VR_LE {
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(b"CS");
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&value);
    out
}

/// Deepest nesting of sequences [`check_structure`] lets through. dicom-parser recurses once
/// per level (and so do drop and encode); real data sets (SR trees included) stay far below.
pub const MAX_SEQUENCE_DEPTH: usize = 64;

/// Walk the element headers of the `len` bytes of a data set in `source` (transfer syntax
/// `ts`) before it is handed to dicom-parser, which allocates and zeroes an announced value
/// length before reading it and recurses per sequence level: every defined length must fit
/// in what is left of the data set, sequences may nest at most [`MAX_SEQUENCE_DEPTH`] deep,
/// and every sequence, item and fragment list of undefined length must be closed by its
/// delimiter before the end (PS3.5 7.5.1, A.4), so a data set cut short fails. Without this
/// a peer could make us zero 4 GiB for a 20-byte data set, overflow the stack (aborting the
/// process) with deeply nested sequences, or get a truncated instance acknowledged.
///
/// Walks the whole data set, after Pixel Data too: what follows Pixel Data is parsed when
/// an instance is transcoded or sent in another transfer syntax. Values are skipped, not
/// read (large ones by seeking), so a large image costs a few reads. Returns where the
/// top-level Pixel Data value starts, if there is one; anything else odd is left for the
/// parser to report.
pub fn check_structure<R: Read + Seek>(
    mut source: R,
    len: u64,
    ts: &str,
) -> Result<Option<PixelDataAt>, DatasetError> {
    use dicom_core::header::{Length, SequenceItemHeader};
    use dicom_core::VR;

    enum Open {
        Sequence(Option<u64>),
        Item(Option<u64>),
        Fragments,
    }
    let decoder = syntax(ts)?
        .decoder_for::<R>()
        .ok_or_else(|| DatasetError::UnknownTransferSyntax(ts.to_string()))?;
    let bad = |problem: String| DatasetError::Parse(problem);
    let parse = |e: dicom_encoding::decode::Error| DatasetError::Parse(e.to_string());
    // The end of a value of `length` starting at `pos`, if it fits.
    let fits = |pos: u64, length: u32, what: &str| -> Result<u64, DatasetError> {
        let end = pos + u64::from(length);
        if end > len {
            return Err(bad(format!(
                "{what} at byte {pos} announces {length} bytes, but only {} remain",
                len - pos
            )));
        }
        Ok(end)
    };
    let mut pos = 0u64;
    let mut stack: Vec<Open> = Vec::new();
    let mut pixel = None;
    loop {
        // Close the containers of defined length that end here.
        while let Some(Open::Sequence(Some(end)) | Open::Item(Some(end))) = stack.last() {
            match pos.cmp(end) {
                std::cmp::Ordering::Less => break,
                std::cmp::Ordering::Equal => {
                    stack.pop();
                }
                std::cmp::Ordering::Greater => {
                    return Err(bad(format!(
                        "element at byte {pos} overruns its sequence or item"
                    )))
                }
            }
        }
        if pos >= len {
            if let Some(open) = stack.last() {
                let what = match open {
                    Open::Sequence(_) => "a sequence",
                    Open::Item(_) => "a sequence item",
                    Open::Fragments => "encapsulated Pixel Data",
                };
                return Err(bad(format!(
                    "data set ends inside {what} of undefined length (truncated)"
                )));
            }
            return Ok(pixel);
        }
        match stack.last() {
            Some(Open::Sequence(_)) | Some(Open::Fragments) => {
                let header = decoder.decode_item_header(&mut source).map_err(parse)?;
                pos += 8;
                if pos > len {
                    return Err(bad(format!(
                        "item header overruns the data set at byte {pos}"
                    )));
                }
                match header {
                    SequenceItemHeader::Item { len: Length(n) }
                        if matches!(stack.last(), Some(Open::Fragments)) =>
                    {
                        // A pixel data fragment: bytes, not a data set.
                        let end = fits(pos, n, "pixel data fragment")?;
                        skip(&mut source, end - pos)?;
                        pos = end;
                    }
                    SequenceItemHeader::Item { len: n } => {
                        let end = match n.get() {
                            Some(n) => Some(fits(pos, n, "item")?),
                            None => None,
                        };
                        stack.push(Open::Item(end));
                    }
                    SequenceItemHeader::SequenceDelimiter => {
                        stack.pop();
                    }
                    SequenceItemHeader::ItemDelimiter => {
                        return Err(bad(format!("item delimiter outside an item at byte {pos}")))
                    }
                }
            }
            Some(Open::Item(_)) | None => {
                let (header, n) = decoder.decode_header(&mut source).map_err(parse)?;
                pos += n as u64;
                if pos > len {
                    return Err(bad(format!(
                        "element header overruns the data set at byte {pos}"
                    )));
                }
                if header.tag == Tag(0xFFFE, 0xE00D) {
                    if matches!(stack.last(), Some(Open::Item(_))) {
                        stack.pop();
                    }
                    continue;
                }
                if stack.is_empty() && header.tag == PIXEL_DATA && pixel.is_none() {
                    pixel = Some(PixelDataAt {
                        value_offset: pos,
                        vr: header.vr,
                        len: header.len.get(),
                    });
                    if let Some(n) = header.len.get() {
                        // Native pixel data; a truncated file must not pass for an image.
                        let end = fits(pos, n, "Pixel Data")?;
                        skip(&mut source, end - pos)?;
                        pos = end;
                        continue;
                    }
                }
                if header.vr == VR::SQ || header.len.is_undefined() {
                    if header.tag == PIXEL_DATA && header.len.is_undefined() {
                        stack.push(Open::Fragments);
                        continue;
                    }
                    let depth = stack
                        .iter()
                        .filter(|o| matches!(o, Open::Sequence(_)))
                        .count();
                    if depth >= MAX_SEQUENCE_DEPTH {
                        return Err(bad(format!(
                            "sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels at byte {pos}"
                        )));
                    }
                    let end = match header.len.get() {
                        Some(n) => Some(fits(pos, n, "sequence")?),
                        None => None,
                    };
                    stack.push(Open::Sequence(end));
                } else {
                    // dicom-parser reads len / size values and then loses its place in the
                    // headers (found by fuzzing): a value must hold whole values.
                    let size = match header.vr {
                        VR::US | VR::SS | VR::OW => 2,
                        VR::UL | VR::SL | VR::FL | VR::OF | VR::OL | VR::AT => 4,
                        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
                        _ => 1,
                    };
                    if header.len.0 % size != 0 {
                        return Err(bad(format!(
                            "{} {:?} at byte {pos} has {} bytes, not a whole number of values",
                            header.tag, header.vr, header.len.0
                        )));
                    }
                    let end = fits(pos, header.len.0, "element")?;
                    skip(&mut source, end - pos)?;
                    pos = end;
                }
            }
        }
    }
}

/// Skip `n` bytes of `source`: small values are read (cheap in a buffered reader, which a
/// seek would empty), large ones are seeked over.
fn skip<R: Read + Seek>(source: &mut R, n: u64) -> Result<(), DatasetError> {
    const READ_UP_TO: u64 = 64 * 1024;
    let io = |e: std::io::Error| DatasetError::Parse(format!("cannot skip a value: {e}"));
    if n <= READ_UP_TO {
        let copied = std::io::copy(&mut source.take(n), &mut std::io::sink()).map_err(io)?;
        if copied < n {
            return Err(DatasetError::Parse("data set ends inside a value".into()));
        }
    } else {
        // `fits` has checked that the value ends within the data set.
        let offset = i64::try_from(n).map_err(|_| DatasetError::Parse("value too long".into()))?;
        source.seek(SeekFrom::Current(offset)).map_err(io)?;
    }
    Ok(())
}

/// Where top-level Pixel Data starts, as found by [`check_structure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelDataAt {
    /// Offset of the value (just after the element header) from the start of the data set.
    pub value_offset: u64,
    pub vr: dicom_core::VR,
    /// Value length; `None` when undefined (encapsulated pixel data, PS3.5 A.4).
    pub len: Option<u32>,
}

/// Encode a data set in transfer syntax `ts`; text is encoded in the Specific Character
/// Set the object declares.
pub fn encode(obj: &InMemDicomObject, ts: &str) -> Result<Vec<u8>, DatasetError> {
    let mut out = Vec::with_capacity(1024);
    obj.write_dataset_with_ts(&mut out, syntax(ts)?)
        .map_err(|e| DatasetError::Encode(e.to_string()))?;
    Ok(out)
}

/// The preamble, magic code and file meta group for a received instance (PS3.10 7.1).
pub fn file_header(
    sop_class: &str,
    sop_instance: &str,
    ts: &str,
    source_ae: &str,
) -> Result<Vec<u8>, DatasetError> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(ts)
        .implementation_class_uid(crate::sop::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(crate::sop::IMPLEMENTATION_VERSION)
        .source_application_entity_title(source_ae)
        .build()
        .map_err(|e| DatasetError::Encode(e.to_string()))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| DatasetError::Encode(e.to_string()))?;
    Ok(out)
}

/// A stored DICOM file's meta information and where its data set starts.
#[derive(Debug, Clone)]
pub struct FileLayout {
    pub meta: FileMetaTable,
    pub dataset_offset: u64,
    pub file_len: u64,
}

impl FileLayout {
    pub fn dataset_len(&self) -> u64 {
        self.file_len.saturating_sub(self.dataset_offset)
    }
}

/// Read the meta group of a Part 10 file (with preamble) without reading the data set.
pub fn read_layout(path: &Path) -> Result<FileLayout, DatasetError> {
    let err = |problem: String| DatasetError::File {
        path: path.display().to_string(),
        problem,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let file_len = file.metadata().map_err(|e| err(e.to_string()))?.len();
    // The meta group is read a few bytes at a time: one buffered read instead of dozens.
    let file = std::io::BufReader::with_capacity(4096, file);
    layout_from(file, file_len).map_err(err)
}

/// [`read_layout`] of a Part 10 file of `file_len` bytes read from its start.
fn layout_from<R: Read>(mut file: R, file_len: u64) -> Result<FileLayout, String> {
    let mut preamble = [0u8; 128];
    file.read_exact(&mut preamble)
        .map_err(|e| format!("no preamble: {e}"))?;
    let meta =
        FileMetaTable::from_reader(&mut file).map_err(|e| format!("no file meta group: {e}"))?;
    // preamble + "DICM" + (0002,0000) UL element (12 bytes) + the rest of the group.
    let dataset_offset = 128 + 4 + 12 + u64::from(meta.information_group_length);
    if dataset_offset > file_len {
        return Err("file meta group longer than the file".into());
    }
    Ok(FileLayout {
        meta,
        dataset_offset,
        file_len,
    })
}

/// [`check_structure`] for the data set of a Part 10 file.
pub fn check_file_structure(path: &Path) -> Result<(), DatasetError> {
    locate_pixel_data(path).map(|_| ())
}

/// [`check_structure`] for the data set of a Part 10 file, with the file's layout and where
/// its top-level Pixel Data value starts (offset from the start of the file).
pub fn locate_pixel_data(path: &Path) -> Result<(FileLayout, Option<PixelDataAt>), DatasetError> {
    let layout = read_layout(path)?;
    let pixel = pixel_data_in(path, &layout)?;
    Ok((layout, pixel))
}

/// The items of encapsulated Pixel Data (PS3.5 A.4) whose value starts at `at` in `file`
/// (just after the element header), borrowed: the Basic Offset Table's value, every
/// fragment, and the offset just after the Sequence Delimitation Item. Item headers are
/// little endian whatever the syntax.
pub fn encapsulated_items(file: &[u8], at: usize) -> Result<EncapsulatedItems<'_>, String> {
    const ITEM: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
    const SEQUENCE_END: [u8; 4] = [0xFE, 0xFF, 0xDD, 0xE0];
    let mut pos = at;
    // The first item is the Basic Offset Table (PS3.5 A.4), possibly empty.
    let mut basic_offset_table = None;
    let mut fragments = Vec::new();
    loop {
        let header = file
            .get(pos..pos + 8)
            .ok_or("encapsulated Pixel Data without its Sequence Delimitation Item")?;
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        if header[..4] == SEQUENCE_END {
            pos += 8;
            break;
        }
        if header[..4] != ITEM {
            return Err(format!("not an item at {pos} in encapsulated Pixel Data"));
        }
        let value = file
            .get(pos + 8..pos + 8 + len)
            .ok_or("a fragment runs past the end of the file")?;
        if basic_offset_table.is_none() {
            basic_offset_table = Some(value);
        } else {
            fragments.push(value);
        }
        pos += 8 + len;
    }
    let basic_offset_table =
        basic_offset_table.ok_or("encapsulated Pixel Data without its Basic Offset Table item")?;
    Ok(EncapsulatedItems {
        basic_offset_table,
        fragments,
        end: pos,
    })
}

/// What [`encapsulated_items`] found.
#[derive(Debug)]
pub struct EncapsulatedItems<'a> {
    pub basic_offset_table: &'a [u8],
    pub fragments: Vec<&'a [u8]>,
    /// Offset just after the Sequence Delimitation Item.
    pub end: usize,
}

/// [`check_structure`] for the data set of a Part 10 file whose meta group is already read.
pub fn pixel_data_in(
    path: &Path,
    layout: &FileLayout,
) -> Result<Option<PixelDataAt>, DatasetError> {
    let file_error = |e: std::io::Error| DatasetError::File {
        path: path.display().to_string(),
        problem: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(file_error)?;
    pixel_data_from(file, layout).map_err(|e| match e {
        StructureError::Io(e) => file_error(e),
        StructureError::Dataset(e) => e,
    })
}

/// Why [`pixel_data_from`] failed: the source, or the data set.
enum StructureError {
    Io(std::io::Error),
    Dataset(DatasetError),
}

impl From<DatasetError> for StructureError {
    fn from(e: DatasetError) -> Self {
        StructureError::Dataset(e)
    }
}

/// [`pixel_data_in`] over any source holding the whole file.
fn pixel_data_from<R: Read + Seek>(
    mut file: R,
    layout: &FileLayout,
) -> Result<Option<PixelDataAt>, StructureError> {
    file.seek(SeekFrom::Start(layout.dataset_offset))
        .map_err(StructureError::Io)?;
    let ts = layout.meta.transfer_syntax().trim_end_matches('\0');
    if ts == crate::sop::DEFLATED_EXPLICIT_VR_LE {
        check_deflated(file, layout.dataset_len())?;
        // Offsets in the inflated stream say nothing about the file: no byte ranges to serve.
        return Ok(None);
    }
    let pixel = check_structure(
        std::io::BufReader::new(file),
        layout.dataset_len(),
        layout.meta.transfer_syntax(),
    )?
    .map(|at| PixelDataAt {
        value_offset: at.value_offset + layout.dataset_offset,
        ..at
    });
    Ok(pixel)
}

/// A Part 10 file held in memory in the pieces it arrived in (its header, then the PDVs of
/// its data set), read and sought as one stream without joining them.
#[derive(Debug, Clone)]
pub struct PiecesReader<'a> {
    pieces: &'a [bytes::Bytes],
    /// Where each piece starts in the stream.
    starts: Vec<u64>,
    len: u64,
    pos: u64,
}

impl<'a> PiecesReader<'a> {
    pub fn new(pieces: &'a [bytes::Bytes]) -> Self {
        let mut starts = Vec::with_capacity(pieces.len());
        let mut len = 0u64;
        for piece in pieces {
            starts.push(len);
            len += piece.len() as u64;
        }
        PiecesReader {
            pieces,
            starts,
            len,
            pos: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for PiecesReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        // The last piece starting at or before `pos` (empty pieces are skipped by `skip`).
        let at = self.starts.partition_point(|&s| s <= self.pos) - 1;
        let Some((i, piece)) = self.pieces[at..]
            .iter()
            .enumerate()
            .map(|(i, p)| (at + i, p))
            .find(|(i, p)| self.starts[*i] + p.len() as u64 > self.pos)
        else {
            return Ok(0);
        };
        let offset = (self.pos - self.starts[i]) as usize;
        let n = (piece.len() - offset).min(buf.len());
        buf[..n].copy_from_slice(&piece[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PiecesReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the data",
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}

/// [`read_layout`] of a Part 10 file held in memory.
pub fn layout_in_memory(pieces: &[bytes::Bytes]) -> Result<FileLayout, DatasetError> {
    let source = PiecesReader::new(pieces);
    let len = source.len();
    layout_from(source, len).map_err(in_memory_error)
}

/// [`pixel_data_in`] of a Part 10 file held in memory: the same checks without a file.
pub fn pixel_data_in_memory(
    pieces: &[bytes::Bytes],
    layout: &FileLayout,
) -> Result<Option<PixelDataAt>, DatasetError> {
    pixel_data_from(PiecesReader::new(pieces), layout).map_err(|e| match e {
        StructureError::Io(e) => in_memory_error(e.to_string()),
        StructureError::Dataset(e) => e,
    })
}

fn in_memory_error(problem: String) -> DatasetError {
    DatasetError::File {
        path: "(in memory)".into(),
        problem,
    }
}

/// A Part 10 file held in memory, parsed up to `until` (as `OpenFileOptions::open_file`
/// with `read_until` parses a file).
pub fn parse_in_memory_until(
    pieces: &[bytes::Bytes],
    until: Tag,
) -> Result<DefaultDicomObject, String> {
    OpenFileOptions::new()
        .read_until(until)
        .read_preamble(dicom_object::file::ReadPreamble::Always)
        .from_reader(PiecesReader::new(pieces))
        .map_err(|e| e.to_string())
}

/// Most bytes a deflated data set may inflate to (checked while streaming, never held): far
/// above real instances, far below what a deflate bomb would make us walk.
pub const MAX_INFLATED_LEN: u64 = 4 << 30;

/// [`check_structure`] for a Deflated Explicit VR Little Endian data set (PS3.5 A.5) of
/// `len` bytes in `source`: the raw deflate stream is inflated twice through a bounded
/// reader, once to learn the inflated length, once to walk it, and must end with its final
/// block within `len` bytes: a truncated or lying stream is a parse error, never a panic.
/// Where Pixel Data starts is an offset in the inflated data set.
pub fn check_deflated<R: Read + Seek>(
    source: R,
    len: u64,
) -> Result<Option<PixelDataAt>, DatasetError> {
    let mut source = std::io::BufReader::new(source);
    let start = source
        .stream_position()
        .map_err(|e| DatasetError::Parse(format!("cannot read the deflated data set: {e}")))?;
    let inflated_len = std::io::copy(
        &mut Inflater::new((&mut source).take(len)),
        &mut std::io::sink(),
    )
    .map_err(|e| DatasetError::Parse(format!("deflated data set: {e}")))?;
    source
        .seek(SeekFrom::Start(start))
        .map_err(|e| DatasetError::Parse(format!("cannot read the deflated data set: {e}")))?;
    check_structure(
        ForwardOnly(std::io::BufReader::new(Inflater::new(source.take(len)))),
        inflated_len,
        crate::sop::EXPLICIT_VR_LE,
    )
}

/// The data set of the Part 10 file at `path` (read as `layout`), stored as Deflated
/// Explicit VR LE (PS3.5 A.5), inflated: once, into memory, bounded by
/// [`MAX_INFLATED_LEN`] and insisting on the final block, then [`check_structure`] on the
/// inflated bytes. For a transcode, which holds the whole instance anyway;
/// [`check_deflated`] streams instead.
pub fn inflate_stored(path: &Path, layout: &FileLayout) -> Result<Vec<u8>, DatasetError> {
    inflate_stored_after(path, layout, Vec::new())
}

/// [`inflate_stored`] appending the inflated data set to `out` (e.g. a Part 10 header made
/// before): the data set is written once, where it is served from, never copied.
pub fn inflate_stored_after(
    path: &Path,
    layout: &FileLayout,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, DatasetError> {
    let file_error = |e: std::io::Error| DatasetError::File {
        path: path.display().to_string(),
        problem: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(file_error)?;
    file.seek(SeekFrom::Start(layout.dataset_offset))
        .map_err(file_error)?;
    let len = layout.dataset_len();
    let start = out.len();
    // Deflate rarely makes image data smaller than a third; the Vec grows beyond if need be.
    out.reserve((len.saturating_mul(3)).min(1 << 30) as usize);
    inflate_all(file.take(len), &mut out)
        .map_err(|e| DatasetError::Parse(format!("deflated data set: {e}")))?;
    let inflated = &out[start..];
    check_structure(
        std::io::Cursor::new(inflated),
        inflated.len() as u64,
        crate::sop::EXPLICIT_VR_LE,
    )?;
    Ok(out)
}

/// The raw deflate (RFC 1951) stream in `input` inflated onto the end of `out`, straight
/// into its spare capacity (no zeroing, no intermediate buffer), insisting on the final
/// block and bounded by [`MAX_INFLATED_LEN`], as [`Inflater`].
fn inflate_all<R: Read>(input: R, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{BufRead, Error, ErrorKind};
    let mut input = std::io::BufReader::with_capacity(256 * 1024, input);
    let mut state = flate2::Decompress::new(false);
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            // Doubles (amortised) when the first guess was short.
            out.reserve(out.len().max(1 << 20));
        }
        let chunk = input.fill_buf()?;
        let at_end = chunk.is_empty();
        let (in_before, out_before) = (state.total_in(), state.total_out());
        let status = state
            .decompress_vec(chunk, out, flate2::FlushDecompress::None)
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        let consumed = (state.total_in() - in_before) as usize;
        let produced = state.total_out() - out_before;
        input.consume(consumed);
        if state.total_out() > MAX_INFLATED_LEN {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("inflates to more than {MAX_INFLATED_LEN} bytes"),
            ));
        }
        if matches!(status, flate2::Status::StreamEnd) {
            return Ok(());
        }
        if at_end && produced == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "deflate stream ends before its final block (truncated)",
            ));
        }
        if consumed == 0 && produced == 0 {
            return Err(Error::new(ErrorKind::InvalidData, "deflate stream stalls"));
        }
    }
}

/// Raw deflate (RFC 1951) decoding that insists on the final block: flate2's readers end
/// quietly when the input runs out mid-stream. Inflates at most [`MAX_INFLATED_LEN`] bytes.
struct Inflater<R> {
    input: std::io::BufReader<R>,
    state: flate2::Decompress,
    done: bool,
}

impl<R: Read> Inflater<R> {
    fn new(input: R) -> Self {
        Inflater {
            input: std::io::BufReader::with_capacity(64 * 1024, input),
            state: flate2::Decompress::new(false),
            done: false,
        }
    }
}

impl<R: Read> Read for Inflater<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{BufRead, Error, ErrorKind};
        if self.done || out.is_empty() {
            return Ok(0);
        }
        loop {
            let input = self.input.fill_buf()?;
            let at_end = input.is_empty();
            let (in_before, out_before) = (self.state.total_in(), self.state.total_out());
            let status = self
                .state
                .decompress(input, out, flate2::FlushDecompress::None)
                .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
            let consumed = (self.state.total_in() - in_before) as usize;
            let produced = (self.state.total_out() - out_before) as usize;
            self.input.consume(consumed);
            if self.state.total_out() > MAX_INFLATED_LEN {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    format!("inflates to more than {MAX_INFLATED_LEN} bytes"),
                ));
            }
            if matches!(status, flate2::Status::StreamEnd) {
                self.done = true;
                return Ok(produced);
            }
            if produced > 0 {
                return Ok(produced);
            }
            if at_end {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "deflate stream ends before its final block (truncated)",
                ));
            }
            if consumed == 0 {
                return Err(Error::new(ErrorKind::InvalidData, "deflate stream stalls"));
            }
        }
    }
}

/// A reader that [`check_structure`] may "seek" forward only, by reading and dropping.
struct ForwardOnly<R>(R);

impl<R: Read> Read for ForwardOnly<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(out)
    }
}

impl<R: Read> Seek for ForwardOnly<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match to {
            SeekFrom::Current(n) if n >= 0 => {
                let n = n as u64;
                let skipped = std::io::copy(&mut (&mut self.0).take(n), &mut std::io::sink())?;
                if skipped < n {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                Ok(0)
            }
            _ => Err(std::io::Error::other("a stream seeks forward only")),
        }
    }
}

/// Can this build decode every data set and pixel data of syntax `ts`, to re-encode it
/// uncompressed (dicom-pixeldata's decoders, see Cargo.toml)?
pub fn can_decode(ts: &str) -> bool {
    TransferSyntaxRegistry
        .get(ts.trim_end_matches('\0'))
        .is_some_and(|ts| ts.can_decode_all())
}

/// How much of a stored instance [`open_stored`] parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The data set up to top-level Pixel Data (attributes only).
    UpToPixelData,
    /// The whole data set.
    Whole,
}

/// Parse the stored Part 10 file at `path`, but only after [`check_structure`] has passed its
/// whole data set: whatever ingest let through (an older version, a file placed in the store
/// by other means), dicom-parser never meets nesting deeper than [`MAX_SEQUENCE_DEPTH`] or a
/// length beyond the file, and a bad file fails this one request. Every path that parses a
/// stored instance goes through here. Blocking. Also returns where top-level Pixel Data
/// starts (offset from the start of the file).
pub fn open_stored(
    path: &Path,
    extent: Extent,
) -> Result<(DefaultDicomObject, Option<PixelDataAt>), DatasetError> {
    let (_, pixel) = locate_pixel_data(path)?;
    let options = match extent {
        Extent::UpToPixelData => OpenFileOptions::new().read_until(PIXEL_DATA),
        Extent::Whole => OpenFileOptions::new(),
    };
    let object = options.open_file(path).map_err(|e| DatasetError::File {
        path: path.display().to_string(),
        problem: e.to_string(),
    })?;
    Ok((object, pixel))
}

/// Is this text representable in ISO 8859-1 (ISO_IR 100)?
pub fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| (c as u32) < 0x100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use std::io::Cursor;

    #[test]
    fn structure_check_passes_generated_files_and_stops_bombs() {
        let dir = tempfile::tempdir().unwrap();
        let args = crate::testdata::GenerateArgs {
            out: dir.path().to_path_buf(),
            seed: 3,
            patients: 1,
            ct_slices: 2,
            mr_slices: 1,
            dx: false,
            multiframe_frames: 2,
            frame_size: 32,
            encapsulated: true,
            implicit: true,
        };
        for f in crate::testdata::generate(&args).unwrap() {
            check_file_structure(&f.path)
                .unwrap_or_else(|e| panic!("{} ({}): {e}", f.path.display(), f.transfer_syntax));
        }
        let explicit = "1.2.840.10008.1.2.1";
        // (0009,1010) OB announcing ~4 GiB.
        let huge = [
            9, 0, 0x10, 0x10, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF, 1, 2,
        ];
        assert!(check_structure(Cursor::new(&huge[..]), huge.len() as u64, explicit).is_err());
        assert!(decode(&huge, explicit).is_err());
        let mut deep = Vec::new();
        for _ in 0..=MAX_SEQUENCE_DEPTH {
            deep.extend_from_slice(&[
                0x40, 0, 0x30, 0xA7, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        assert!(check_structure(Cursor::new(&deep[..]), deep.len() as u64, explicit).is_err());
        assert!(check_structure(Cursor::new(&[][..]), 0, explicit).is_ok());
    }

    /// Explicit VR Little Endian header with a 4-byte length (OB, SQ ...).
    fn long_header(group: u16, element: u16, vr: &[u8; 2], len: u32) -> Vec<u8> {
        let mut out = group.to_le_bytes().to_vec();
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
        out
    }

    const ITEM: [u8; 8] = [0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF];
    const ITEM_END: [u8; 8] = [0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0];
    const SEQUENCE_END: [u8; 8] = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];

    /// Native Pixel Data of 4 bytes, then `trailer`.
    fn after_pixel_data(trailer: &[u8]) -> Vec<u8> {
        let mut out = long_header(0x7FE0, 0x0010, b"OW", 4);
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend_from_slice(trailer);
        out
    }

    fn check(bytes: &[u8]) -> Result<Option<PixelDataAt>, DatasetError> {
        check_structure(
            Cursor::new(bytes),
            bytes.len() as u64,
            "1.2.840.10008.1.2.1",
        )
    }

    /// `depth` undefined-length sequences, each in an item, closed.
    fn nested(depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for level in 0..depth {
            let tag = if level == 0 {
                (0xFFFA, 0xFFFA)
            } else {
                (0x0040, 0xA730)
            };
            out.extend_from_slice(&long_header(tag.0, tag.1, b"SQ", 0xFFFF_FFFF));
            out.extend_from_slice(&ITEM);
        }
        for _ in 0..depth {
            out.extend_from_slice(&ITEM_END);
            out.extend_from_slice(&SEQUENCE_END);
        }
        out
    }

    #[test]
    fn structure_check_walks_past_pixel_data() {
        // Where Pixel Data is stays known, whatever follows it.
        let at = check(&after_pixel_data(&nested(MAX_SEQUENCE_DEPTH)))
            .unwrap()
            .expect("Pixel Data");
        assert_eq!((at.value_offset, at.len, at.vr), (12, Some(4), VR::OW));
        // Issue 18: nesting after Pixel Data counts as much as before it.
        let too_deep = after_pixel_data(&nested(MAX_SEQUENCE_DEPTH + 1));
        assert!(check(&too_deep).is_err());
        assert!(check(&after_pixel_data(&nested(1000))).is_err());
        // A value after Pixel Data announcing more than arrives.
        let mut truncated = long_header(0xFFFA, 0xFFFA, b"SQ", 0xFFFF_FFFF);
        truncated.extend_from_slice(&ITEM);
        truncated.extend_from_slice(&long_header(0x0042, 0x0011, b"OB", 200 << 20));
        truncated.extend_from_slice(&[0u8; 1024]);
        assert!(check(&after_pixel_data(&truncated)).is_err());
        // Cut short where a delimiter should come: an unclosed sequence, item or fragments.
        let mut unclosed = long_header(0xFFFA, 0xFFFA, b"SQ", 0xFFFF_FFFF);
        assert!(check(&after_pixel_data(&unclosed)).is_err());
        unclosed.extend_from_slice(&ITEM);
        assert!(check(&after_pixel_data(&unclosed)).is_err());
        let mut fragments = long_header(0x7FE0, 0x0010, b"OB", 0xFFFF_FFFF);
        fragments.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        fragments.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 9, 9]);
        assert!(check(&fragments).is_err(), "no sequence delimiter");
        fragments.extend_from_slice(&SEQUENCE_END);
        let at = check(&fragments).unwrap().expect("Pixel Data");
        assert_eq!((at.value_offset, at.len), (12, None));
        // Large values are seeked over, and the walk still ends in the right place.
        let mut large = long_header(0x7FE0, 0x0010, b"OB", 1 << 20);
        large.extend_from_slice(&vec![7u8; 1 << 20]);
        large.extend_from_slice(&nested(2));
        assert!(check(&large).unwrap().is_some());
        large.truncate(large.len() - 1);
        assert!(check(&large).is_err());
    }

    fn deflated(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn deflated_data_sets_are_checked_inflated() {
        let plain = after_pixel_data(&nested(3));
        let packed = deflated(&plain);
        let check = |bytes: &[u8]| check_deflated(Cursor::new(bytes), bytes.len() as u64);
        let at = check(&packed).unwrap().expect("Pixel Data");
        assert_eq!(at.value_offset, 12, "an offset in the inflated data set");
        // PS3.5 A.5: a pad byte after the stream is allowed.
        let mut padded = packed.clone();
        padded.push(0);
        assert!(check(&padded).is_ok());
        // Cut anywhere, the stream lacks its final block: a clean failure.
        for cut in [1, packed.len() / 2, packed.len() - 1] {
            assert!(check(&packed[..cut]).is_err(), "cut at {cut}");
        }
        assert!(check(b"not a deflate stream at all").is_err());
        // What inflates is checked like any data set: nesting past the limit fails.
        let too_deep = deflated(&after_pixel_data(&nested(MAX_SEQUENCE_DEPTH + 1)));
        assert!(check(&too_deep).is_err());
        // An element announcing more than the inflated data set holds.
        let mut lying = long_header(0x0009, 0x1010, b"OB", 0xFFF0_0000);
        lying.extend_from_slice(&[1, 2, 3, 4]);
        assert!(check(&deflated(&lying)).is_err());
    }

    /// A Part 10 file in Deflated Explicit VR LE of `data_set` (deflated here) in `dir`.
    fn deflated_file(dir: &Path, name: &str, data_set: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut bytes = file_header(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            "1.2.840.10008.1.2.1.99",
            "AE",
        )
        .unwrap();
        bytes.extend_from_slice(&deflated(data_set));
        std::fs::write(&path, &bytes).unwrap();
        path
    }

    #[test]
    fn stored_deflated_data_sets_inflate_behind_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        // 8 MiB of Pixel Data deflating to a few KiB: far past the first guess of three
        // times the stored length, so the output grows while inflating.
        let mut plain = long_header(0x7FE0, 0x0010, b"OW", 8 << 20);
        plain.extend((0..8u32 << 20).map(|i| (i / 4096) as u8));
        let path = deflated_file(dir.path(), "big.dcm", &plain);
        let layout = read_layout(&path).unwrap();
        assert!(layout.dataset_len() * 3 < plain.len() as u64);
        let out = inflate_stored_after(&path, &layout, b"header".to_vec()).unwrap();
        assert_eq!(&out[..6], b"header");
        assert!(
            out[6..] == plain[..],
            "the inflated data set, after the header"
        );
        assert!(inflate_stored(&path, &layout).unwrap() == plain);

        // Cut short, the stream lacks its final block: an error, whatever the cut.
        let bytes = std::fs::read(&path).unwrap();
        let at = layout.dataset_offset as usize;
        for cut in [at + 1, (at + bytes.len()) / 2, bytes.len() - 1] {
            let cut_path = dir.path().join("cut.dcm");
            std::fs::write(&cut_path, &bytes[..cut]).unwrap();
            let layout = read_layout(&cut_path).unwrap();
            assert!(
                inflate_stored(&cut_path, &layout).is_err(),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
        // What inflates is walked: an element longer than the data set fails.
        let mut lying = long_header(0x0009, 0x1010, b"OB", 0xFFF0_0000);
        lying.extend_from_slice(&[1, 2, 3, 4]);
        let path = deflated_file(dir.path(), "lying.dcm", &lying);
        assert!(inflate_stored(&path, &read_layout(&path).unwrap()).is_err());
    }

    #[test]
    fn latin1_round_trip_keeps_diacritics() {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 100"),
        ));
        obj.put(DataElement::new(
            Tag(0x0010, 0x0010),
            VR::PN,
            PrimitiveValue::from("Müller^Zoë"),
        ));
        let bytes = encode(&obj, "1.2.840.10008.1.2").unwrap();
        assert!(
            bytes.windows(3).any(|w| w == [b'M', 0xFC, b'l']),
            "Latin-1 bytes expected"
        );
        let back = decode(&bytes, "1.2.840.10008.1.2").unwrap();
        let name = back.element(Tag(0x0010, 0x0010)).unwrap().to_str().unwrap();
        assert_eq!(name.trim_end(), "Müller^Zoë");
    }

    #[test]
    fn header_layout_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dcm");
        let mut bytes = file_header(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            "1.2.840.10008.1.2.1",
            "AE",
        )
        .unwrap();
        let header_len = bytes.len() as u64;
        bytes.extend_from_slice(&[8, 0, 0x18, 0, b'U', b'I', 2, 0, b'1', 0]);
        std::fs::write(&path, &bytes).unwrap();
        let layout = read_layout(&path).unwrap();
        assert_eq!(layout.dataset_offset, header_len);
        assert_eq!(layout.meta.media_storage_sop_instance_uid(), "1.2.3");
        assert_eq!(layout.dataset_len(), 10);
    }

    #[test]
    fn a_file_in_pieces_reads_as_the_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let args = crate::testdata::GenerateArgs {
            ct_slices: 1,
            mr_slices: 1,
            patients: 1,
            encapsulated: true,
            implicit: true,
            ..crate::testdata::GenerateArgs::with_defaults(dir.path())
        };
        for f in crate::testdata::generate(&args).unwrap() {
            let bytes = std::fs::read(&f.path).unwrap();
            // Uneven pieces, an empty one among them (as PDVs may come).
            let mut cuts = [0, 7, 200, 200, 1000, bytes.len() / 2, bytes.len()];
            cuts.sort_unstable();
            let pieces: Vec<bytes::Bytes> = cuts
                .windows(2)
                .map(|w| bytes::Bytes::copy_from_slice(&bytes[w[0]..w[1]]))
                .collect();
            let mut whole = Vec::new();
            PiecesReader::new(&pieces).read_to_end(&mut whole).unwrap();
            assert_eq!(whole, bytes);
            let mut reader = PiecesReader::new(&pieces);
            reader.seek(SeekFrom::Start(199)).unwrap();
            reader.seek(SeekFrom::Current(3)).unwrap();
            let mut three = [0u8; 3];
            reader.read_exact(&mut three).unwrap();
            assert_eq!(three, bytes[202..205]);

            let (file_layout, file_pixel) = locate_pixel_data(&f.path).unwrap();
            let layout = layout_in_memory(&pieces).unwrap();
            assert_eq!(layout.dataset_offset, file_layout.dataset_offset);
            assert_eq!(layout.file_len, file_layout.file_len);
            let pixel = pixel_data_in_memory(&pieces, &layout).unwrap();
            assert_eq!(
                pixel.map(|p| p.value_offset),
                file_pixel.map(|p| p.value_offset),
                "{}",
                f.transfer_syntax
            );
            let parsed = parse_in_memory_until(&pieces, PIXEL_DATA).unwrap();
            assert_eq!(
                parsed.meta().media_storage_sop_instance_uid(),
                f.sop_uid.as_str()
            );
            // Cut short: the structure check fails, as for a truncated file.
            let short = &pieces[..pieces.len() - 1];
            let failed =
                layout_in_memory(short).and_then(|layout| pixel_data_in_memory(short, &layout));
            assert!(failed.is_err(), "{}", f.transfer_syntax);
        }
    }

    fn item(tag: [u8; 4], value: &[u8]) -> Vec<u8> {
        let mut out = tag.to_vec();
        out.extend((value.len() as u32).to_le_bytes());
        out.extend(value);
        out
    }

    #[test]
    fn encapsulated_items_splits_the_offset_table_from_the_fragments() {
        const ITEM: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
        const END: [u8; 4] = [0xFE, 0xFF, 0xDD, 0xE0];
        // 3 bytes before the value, as if an element header preceded it.
        let mut file = vec![9, 9, 9];
        file.extend(item(ITEM, &[0, 0, 0, 0, 12, 0, 0, 0]));
        file.extend(item(ITEM, &[1, 2, 3, 4]));
        file.extend(item(ITEM, &[5, 6]));
        file.extend(item(END, &[]));
        let end = file.len();
        file.extend([7, 7]);
        let items = encapsulated_items(&file, 3).unwrap();
        assert_eq!(items.basic_offset_table, &[0, 0, 0, 0, 12, 0, 0, 0]);
        assert_eq!(items.fragments, vec![&[1u8, 2, 3, 4][..], &[5, 6][..]]);
        assert_eq!(items.end, end);

        // An empty offset table is still the first item, not a fragment.
        let mut empty_bot = item(ITEM, &[]);
        empty_bot.extend(item(ITEM, &[1, 2]));
        empty_bot.extend(item(END, &[]));
        let items = encapsulated_items(&empty_bot, 0).unwrap();
        assert!(items.basic_offset_table.is_empty());
        assert_eq!(items.fragments, vec![&[1u8, 2][..]]);

        // Broken structures are errors, never a panic.
        assert!(encapsulated_items(&item(END, &[]), 0).is_err(), "no items");
        let no_end = item(ITEM, &[]);
        assert!(encapsulated_items(&no_end, 0).is_err(), "no delimiter");
        let mut overrun = item(ITEM, &[]);
        overrun.extend(&ITEM);
        overrun.extend(100u32.to_le_bytes());
        overrun.extend([0; 10]);
        assert!(
            encapsulated_items(&overrun, 0).is_err(),
            "fragment past the end"
        );
        let mut foreign = item(ITEM, &[]);
        foreign.extend(item([0x10, 0x00, 0x10, 0x00], &[0; 4]));
        assert!(encapsulated_items(&foreign, 0).is_err(), "not an item");
    }
}
