//! DIMSE command sets (PS3.7 Chapter 9/10, Annex E): always Implicit VR Little Endian,
//! group 0000 only, led by Command Group Length.

/// Command Field values (PS3.7 E.1-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CommandField {
    CStoreRq = 0x0001,
    CStoreRsp = 0x8001,
    CGetRq = 0x0010,
    CGetRsp = 0x8010,
    CFindRq = 0x0020,
    CFindRsp = 0x8020,
    CMoveRq = 0x0021,
    CMoveRsp = 0x8021,
    CEchoRq = 0x0030,
    CEchoRsp = 0x8030,
    CCancelRq = 0x0FFF,
}

impl CommandField {
    pub fn from_u16(v: u16) -> Option<Self> {
        use CommandField::*;
        Some(match v {
            0x0001 => CStoreRq,
            0x8001 => CStoreRsp,
            0x0010 => CGetRq,
            0x8010 => CGetRsp,
            0x0020 => CFindRq,
            0x8020 => CFindRsp,
            0x0021 => CMoveRq,
            0x8021 => CMoveRsp,
            0x0030 => CEchoRq,
            0x8030 => CEchoRsp,
            0x0FFF => CCancelRq,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use CommandField::*;
        match self {
            CStoreRq => "C-STORE-RQ",
            CStoreRsp => "C-STORE-RSP",
            CGetRq => "C-GET-RQ",
            CGetRsp => "C-GET-RSP",
            CFindRq => "C-FIND-RQ",
            CFindRsp => "C-FIND-RSP",
            CMoveRq => "C-MOVE-RQ",
            CMoveRsp => "C-MOVE-RSP",
            CEchoRq => "C-ECHO-RQ",
            CEchoRsp => "C-ECHO-RSP",
            CCancelRq => "C-CANCEL-RQ",
        }
    }
}

/// Command Data Set Type (0000,0800): 0x0101 means "no data set follows" (PS3.7 E.1-1).
pub const NO_DATA_SET: u16 = 0x0101;
const HAS_DATA_SET: u16 = 0x0000;

/// Priority (0000,0700): medium (PS3.7 E.1-1).
pub const PRIORITY_MEDIUM: u16 = 0x0000;

mod tags {
    pub const GROUP_LENGTH: u16 = 0x0000;
    pub const AFFECTED_SOP_CLASS: u16 = 0x0002;
    pub const REQUESTED_SOP_CLASS: u16 = 0x0003;
    pub const COMMAND_FIELD: u16 = 0x0100;
    pub const MESSAGE_ID: u16 = 0x0110;
    pub const MESSAGE_ID_RESPONDED: u16 = 0x0120;
    pub const MOVE_DESTINATION: u16 = 0x0600;
    pub const PRIORITY: u16 = 0x0700;
    pub const DATA_SET_TYPE: u16 = 0x0800;
    pub const STATUS: u16 = 0x0900;
    pub const OFFENDING_ELEMENT: u16 = 0x0901;
    pub const ERROR_COMMENT: u16 = 0x0902;
    pub const ERROR_ID: u16 = 0x0903;
    pub const AFFECTED_SOP_INSTANCE: u16 = 0x1000;
    pub const REQUESTED_SOP_INSTANCE: u16 = 0x1001;
    pub const REMAINING: u16 = 0x1020;
    pub const COMPLETED: u16 = 0x1021;
    pub const FAILED: u16 = 0x1022;
    pub const WARNING: u16 = 0x1023;
    pub const MOVE_ORIGINATOR_AE: u16 = 0x1030;
    pub const MOVE_ORIGINATOR_ID: u16 = 0x1031;
}

/// Largest command set we accept; real ones are a few hundred bytes.
pub const MAX_COMMAND_SET: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    #[error("command set element ({group:04X},{element:04X}) is not in group 0000")]
    WrongGroup { group: u16, element: u16 },
    #[error("command set element (0000,{element:04X}) has a bad value length {length}")]
    BadLength { element: u16, length: u32 },
    #[error("command set lacks Command Field (0000,0100)")]
    MissingCommandField,
    #[error("unknown Command Field 0x{0:04X}")]
    UnknownCommandField(u16),
    #[error("command set larger than {MAX_COMMAND_SET} bytes")]
    TooLarge,
}

/// A decoded command set. Only the fields the DIMSE-C services use are typed; others are
/// ignored on decode (PS3.7 6.3.1 allows unknown elements to be skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSet {
    pub field: CommandField,
    pub message_id: Option<u16>,
    pub message_id_responded: Option<u16>,
    pub affected_sop_class: Option<String>,
    pub requested_sop_class: Option<String>,
    pub affected_sop_instance: Option<String>,
    pub requested_sop_instance: Option<String>,
    pub priority: Option<u16>,
    pub has_data_set: bool,
    pub status: Option<u16>,
    pub offending_element: Option<(u16, u16)>,
    pub error_comment: Option<String>,
    pub error_id: Option<u16>,
    pub move_destination: Option<String>,
    pub remaining: Option<u16>,
    pub completed: Option<u16>,
    pub failed: Option<u16>,
    pub warning: Option<u16>,
    pub move_originator_ae: Option<String>,
    pub move_originator_id: Option<u16>,
}

impl CommandSet {
    pub fn new(field: CommandField) -> Self {
        CommandSet {
            field,
            message_id: None,
            message_id_responded: None,
            affected_sop_class: None,
            requested_sop_class: None,
            affected_sop_instance: None,
            requested_sop_instance: None,
            priority: None,
            has_data_set: false,
            status: None,
            offending_element: None,
            error_comment: None,
            error_id: None,
            move_destination: None,
            remaining: None,
            completed: None,
            failed: None,
            warning: None,
            move_originator_ae: None,
            move_originator_id: None,
        }
    }

    /// A request with a message ID and priority medium (PS3.7 9.3.x).
    pub fn request(field: CommandField, message_id: u16, sop_class: &str) -> Self {
        let mut c = Self::new(field);
        c.message_id = Some(message_id);
        c.affected_sop_class = Some(sop_class.to_string());
        if field != CommandField::CEchoRq {
            c.priority = Some(PRIORITY_MEDIUM);
        }
        c
    }

    /// A response to `request` with `status`; the SOP class/instance are echoed back.
    pub fn response_to(request: &CommandSet, field: CommandField, status: u16) -> Self {
        let mut c = Self::new(field);
        c.message_id_responded = request.message_id;
        c.affected_sop_class = request.affected_sop_class.clone();
        if matches!(field, CommandField::CStoreRsp) {
            c.affected_sop_instance = request.affected_sop_instance.clone();
        }
        c.status = Some(status);
        c
    }

    pub fn with_data_set(mut self, has: bool) -> Self {
        self.has_data_set = has;
        self
    }

    pub fn status(&self) -> u16 {
        self.status.unwrap_or(0xC000)
    }

    /// Encode in Implicit VR Little Endian with the group length first (PS3.7 6.3.1).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        let mut uid = |el: u16, v: &Option<String>| {
            if let Some(v) = v {
                put_text(&mut body, el, v, 0);
            }
        };
        uid(tags::AFFECTED_SOP_CLASS, &self.affected_sop_class);
        uid(tags::REQUESTED_SOP_CLASS, &self.requested_sop_class);
        put_u16(&mut body, tags::COMMAND_FIELD, self.field as u16);
        opt_u16(&mut body, tags::MESSAGE_ID, self.message_id);
        opt_u16(
            &mut body,
            tags::MESSAGE_ID_RESPONDED,
            self.message_id_responded,
        );
        if let Some(v) = &self.move_destination {
            put_text(&mut body, tags::MOVE_DESTINATION, v, b' ');
        }
        opt_u16(&mut body, tags::PRIORITY, self.priority);
        let ds_type = if self.has_data_set {
            HAS_DATA_SET
        } else {
            NO_DATA_SET
        };
        put_u16(&mut body, tags::DATA_SET_TYPE, ds_type);
        opt_u16(&mut body, tags::STATUS, self.status);
        if let Some((g, e)) = self.offending_element {
            put_header(&mut body, tags::OFFENDING_ELEMENT, 4);
            body.extend_from_slice(&g.to_le_bytes());
            body.extend_from_slice(&e.to_le_bytes());
        }
        if let Some(v) = &self.error_comment {
            // LO: at most 64 characters.
            let v: String = v
                .chars()
                .filter(|c| c.is_ascii() && !c.is_control())
                .take(64)
                .collect();
            put_text(&mut body, tags::ERROR_COMMENT, &v, b' ');
        }
        opt_u16(&mut body, tags::ERROR_ID, self.error_id);
        if let Some(v) = &self.affected_sop_instance {
            put_text(&mut body, tags::AFFECTED_SOP_INSTANCE, v, 0);
        }
        if let Some(v) = &self.requested_sop_instance {
            put_text(&mut body, tags::REQUESTED_SOP_INSTANCE, v, 0);
        }
        opt_u16(&mut body, tags::REMAINING, self.remaining);
        opt_u16(&mut body, tags::COMPLETED, self.completed);
        opt_u16(&mut body, tags::FAILED, self.failed);
        opt_u16(&mut body, tags::WARNING, self.warning);
        if let Some(v) = &self.move_originator_ae {
            put_text(&mut body, tags::MOVE_ORIGINATOR_AE, v, b' ');
        }
        opt_u16(&mut body, tags::MOVE_ORIGINATOR_ID, self.move_originator_id);

        let mut out = Vec::with_capacity(body.len() + 12);
        put_header(&mut out, tags::GROUP_LENGTH, 4);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decode a complete command set. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<CommandSet, CommandError> {
        if bytes.len() > MAX_COMMAND_SET {
            return Err(CommandError::TooLarge);
        }
        let mut pos = 0usize;
        let mut field = None;
        let mut c = CommandSet::new(CommandField::CEchoRq);
        let mut has_data_set = false;
        while pos < bytes.len() {
            let head = bytes
                .get(pos..pos + 8)
                .ok_or(CommandError::Truncated(pos))?;
            let group = u16::from_le_bytes([head[0], head[1]]);
            let element = u16::from_le_bytes([head[2], head[3]]);
            let length = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if group != 0x0000 && pos == 0 {
                return Err(CommandError::WrongGroup { group, element });
            }
            let start = pos + 8;
            let end = start
                .checked_add(length as usize)
                .filter(|&e| e <= bytes.len())
                .ok_or(CommandError::BadLength { element, length })?;
            // A command set holds group 0000 only (PS3.7 6.3.1), but DCMTK-based peers put
            // status detail after it: Orthanc's C-GET-RSP carries the Failed SOP Instance
            // UID List (0008,0058) there once a sub-operation failed. Not ours to read:
            // skipped, rather than losing the association over it.
            if group != 0x0000 {
                pos = end;
                continue;
            }
            let value = &bytes[start..end];
            let us = || -> Result<u16, CommandError> {
                match value {
                    [a, b] => Ok(u16::from_le_bytes([*a, *b])),
                    _ => Err(CommandError::BadLength { element, length }),
                }
            };
            let text = || Some(trim_text(value));
            match element {
                tags::AFFECTED_SOP_CLASS => c.affected_sop_class = text(),
                tags::REQUESTED_SOP_CLASS => c.requested_sop_class = text(),
                tags::COMMAND_FIELD => field = Some(us()?),
                tags::MESSAGE_ID => c.message_id = Some(us()?),
                tags::MESSAGE_ID_RESPONDED => c.message_id_responded = Some(us()?),
                tags::MOVE_DESTINATION => c.move_destination = text(),
                tags::PRIORITY => c.priority = Some(us()?),
                tags::DATA_SET_TYPE => has_data_set = us()? != NO_DATA_SET,
                tags::STATUS => c.status = Some(us()?),
                tags::OFFENDING_ELEMENT if value.len() >= 4 => {
                    c.offending_element = Some((
                        u16::from_le_bytes([value[0], value[1]]),
                        u16::from_le_bytes([value[2], value[3]]),
                    ))
                }
                tags::ERROR_COMMENT => c.error_comment = text(),
                tags::ERROR_ID => c.error_id = Some(us()?),
                tags::AFFECTED_SOP_INSTANCE => c.affected_sop_instance = text(),
                tags::REQUESTED_SOP_INSTANCE => c.requested_sop_instance = text(),
                tags::REMAINING => c.remaining = Some(us()?),
                tags::COMPLETED => c.completed = Some(us()?),
                tags::FAILED => c.failed = Some(us()?),
                tags::WARNING => c.warning = Some(us()?),
                tags::MOVE_ORIGINATOR_AE => c.move_originator_ae = text(),
                tags::MOVE_ORIGINATOR_ID => c.move_originator_id = Some(us()?),
                _ => {}
            }
            pos = end;
        }
        let field = field.ok_or(CommandError::MissingCommandField)?;
        c.field = CommandField::from_u16(field).ok_or(CommandError::UnknownCommandField(field))?;
        c.has_data_set = has_data_set;
        Ok(c)
    }
}

fn trim_text(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_matches(|c: char| c == '\0' || c == ' ')
        .to_string()
}

fn put_header(out: &mut Vec<u8>, element: u16, length: u32) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
}

fn put_u16(out: &mut Vec<u8>, element: u16, v: u16) {
    put_header(out, element, 2);
    out.extend_from_slice(&v.to_le_bytes());
}

fn opt_u16(out: &mut Vec<u8>, element: u16, v: Option<u16>) {
    if let Some(v) = v {
        put_u16(out, element, v);
    }
}

/// Text padded to even length: UIDs with NUL, AE/LO with space (PS3.5 6.2).
fn put_text(out: &mut Vec<u8>, element: u16, v: &str, pad: u8) {
    let len = v.len() + v.len() % 2;
    put_header(out, element, len as u32);
    out.extend_from_slice(v.as_bytes());
    if v.len() % 2 == 1 {
        out.push(pad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_store_request() {
        let mut c = CommandSet::request(CommandField::CStoreRq, 7, "1.2.840.10008.5.1.4.1.1.2");
        c.affected_sop_instance = Some("1.2.3.4.5".into());
        c.move_originator_ae = Some("MOVER".into());
        c.move_originator_id = Some(3);
        c.has_data_set = true;
        let bytes = c.encode();
        assert_eq!(bytes.len() % 2, 0);
        let group_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(group_len, bytes.len() - 12);
        assert_eq!(CommandSet::decode(&bytes).unwrap(), c);
    }

    #[test]
    fn round_trip_move_response_counts() {
        let rq = CommandSet::request(CommandField::CMoveRq, 9, "1.2.840.10008.5.1.4.1.2.2.2");
        let mut rsp = CommandSet::response_to(&rq, CommandField::CMoveRsp, 0xFF00);
        rsp.remaining = Some(4);
        rsp.completed = Some(1);
        rsp.failed = Some(0);
        rsp.warning = Some(0);
        rsp.error_comment = Some("odd".into());
        let back = CommandSet::decode(&rsp.encode()).unwrap();
        assert_eq!(back, rsp);
        assert_eq!(back.message_id_responded, Some(9));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(
            CommandSet::decode(&[0, 0, 0, 1]),
            Err(CommandError::Truncated(0))
        );
        let mut bad = vec![0, 0, 0x00, 0x01, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            CommandSet::decode(&bad),
            Err(CommandError::BadLength { .. })
        ));
        bad = vec![8, 0, 0x10, 0x00, 0, 0, 0, 0];
        assert!(matches!(
            CommandSet::decode(&bad),
            Err(CommandError::WrongGroup { .. })
        ));
        assert_eq!(
            CommandSet::decode(&[]),
            Err(CommandError::MissingCommandField)
        );
        assert_eq!(
            CommandError::WrongGroup {
                group: 8,
                element: 0x10
            }
            .to_string(),
            "command set element (0008,0010) is not in group 0000"
        );
        let unknown = [0, 0, 0x00, 0x01, 2, 0, 0, 0, 0x34, 0x12];
        assert_eq!(
            CommandSet::decode(&unknown),
            Err(CommandError::UnknownCommandField(0x1234))
        );
    }

    /// A pending C-GET-RSP as Orthanc 1.10.1 sent it after a failed sub-operation: the
    /// Failed SOP Instance UID List (0008,0058), with its group length, after the command.
    #[test]
    fn skips_status_detail_after_the_command_elements() {
        let mut rsp = CommandSet::new(CommandField::CGetRsp);
        rsp.affected_sop_class = Some("1.2.840.10008.5.1.4.1.2.2.3".into());
        rsp.message_id_responded = Some(1);
        rsp.status = Some(0xFF00);
        rsp.remaining = Some(32);
        rsp.completed = Some(7);
        rsp.failed = Some(1);
        rsp.warning = Some(0);
        let mut bytes = rsp.encode();
        let uid = b"2.25.297538177358699168197819920760703595200";
        bytes.extend([8, 0, 0, 0, 4, 0, 0, 0]);
        bytes.extend((8 + uid.len() as u32).to_le_bytes());
        bytes.extend([8, 0, 0x58, 0]);
        bytes.extend((uid.len() as u32).to_le_bytes());
        bytes.extend(uid);
        let back = CommandSet::decode(&bytes).expect("status detail skipped");
        assert_eq!(back, rsp);
    }
}
