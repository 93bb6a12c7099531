//! ebRIM 3.0 / ebRS 3.0 on the wire, for the XDS stored queries (ITI-18 Registry Stored
//! Query, ITI-38 Cross Gateway Query): a leaf below everything, reading through the crate's one
//! XML reader ([`crate::xml`], with its size, depth and node limits) and writing by hand with
//! escaping.
//!
//! - [`query`]: an `AdhocQueryRequest` read into a [`StoredQuery`]: which of the fourteen
//!   stored queries of ITI TF-2a 3.18.4.1.2.3.7 ([`QueryId`]), its parameters checked against
//!   the query's table (required ones present, single-valued ones single, the `('a','b')` list
//!   syntax; several values of a slot are ORed, several slots of one code parameter ANDed:
//!   [`Params::code_sets`]), the `returnType` and the `home` community. A bad request is a
//!   [`RegistryError`] (XDSUnknownStoredQuery, XDSStoredQueryParamNumber, XDSRegistryError),
//!   data for the answer, not a fault.
//! - [`model`]: the answer's objects (DocumentEntry, SubmissionSet, Folder, Association) as
//!   generic ebRIM objects, and [`QueryResponse`] (status, errors, return type, home).
//! - [`render`]: the `query:AdhocQueryResponse` element (LeafClass or ObjectRef,
//!   RegistryErrorList, `home` on every object for ITI-38), valid against
//!   `ihe/schema/ebRS/query.xsd`.
//! - [`response`]: the initiating side's direction: an `AdhocQueryRequest` written, an
//!   `AdhocQueryResponse` read back (the remote source's ITI-38 client).
//!
//! # The call sequence of the SOAP front (ITI-18 `/xds/registry`, ITI-38 `/xca/query`)
//!
//! ```text
//! // request: &xml::Element, the SOAP Body's query:AdhocQueryRequest
//! // ticket:  core.admit(&caller, <the XDS query operation>).await?  (a refusal is a Fault)
//! let answer = core.registry_request(ticket, request, RegistryScope::CrossGateway).await;
//! let body: String = ebrim::render::adhoc_query_response(&answer);
//! ```
//!
//! `RegistryScope::Local` for ITI-18 (`/xds/registry`), `CrossGateway` for ITI-38
//! (`/xca/query`: our homeCommunityId on every object). `body` is the Body's only child; the
//! `wsa:Action` is `urn:ihe:iti:2007:RegistryStoredQueryResponse` (ITI-18) or
//! `urn:ihe:iti:2007:CrossGatewayQueryResponse` (ITI-38). `Core::registry_request` reads the
//! request ([`StoredQuery::from_element`]; a bad one is answered with its RegistryError,
//! status Failure) and calls `Core::registry_query`, which applies `$targetCommunityIdList`
//! and consent and writes the ticket's one audit record (Query, 110112) whatever the answer.
//! The answer is always an AdhocQueryResponse, never a fault.

pub mod model;
pub mod query;
pub mod render;
pub mod response;

pub use model::{
    codes, Association, Classification, Code, ExternalIdentifier, ObjectKind, QueryResponse,
    RegistryError, RegistryObject, ResponseStatus, ReturnType, Severity, Slot, Status,
};
pub use query::{Params, QueryId, StoredQuery};

/// Namespaces and the fixed identifiers of ITI TF-3 4.2.5 (Table 4.2.5-1).
pub mod ns {
    pub const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
    pub const QUERY: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0";
    pub const RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";

    pub const STATUS_APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";
    pub const STATUS_DEPRECATED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated";

    pub const OBJECT_TYPE_PACKAGE: &str =
        "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage";
    pub const OBJECT_TYPE_ASSOCIATION: &str =
        "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association";
    pub const OBJECT_TYPE_CLASSIFICATION: &str =
        "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification";
    pub const OBJECT_TYPE_EXTERNAL_ID: &str =
        "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier";

    pub const HAS_MEMBER: &str = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember";
    pub const RPLC: &str = "urn:ihe:iti:2007:AssociationType:RPLC";
    pub const XFRM: &str = "urn:ihe:iti:2007:AssociationType:XFRM";
    pub const APND: &str = "urn:ihe:iti:2007:AssociationType:APND";
    pub const XFRM_RPLC: &str = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC";
    pub const SIGNS: &str = "urn:ihe:iti:2007:AssociationType:signs";
    pub const IS_SNAPSHOT_OF: &str = "urn:ihe:iti:2010:AssociationType:IsSnapshotOf";

    /// DocumentEntry objectType: stable and on-demand.
    pub const STABLE_DOCUMENT: &str = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1";
    pub const ON_DEMAND_DOCUMENT: &str = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248";

    // DocumentEntry.
    pub const DE_AUTHOR: &str = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d";
    pub const DE_CLASS_CODE: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
    pub const DE_CONFIDENTIALITY_CODE: &str = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f";
    pub const DE_EVENT_CODE: &str = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4";
    pub const DE_FORMAT_CODE: &str = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d";
    pub const DE_FACILITY_TYPE_CODE: &str = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1";
    pub const DE_PRACTICE_SETTING_CODE: &str = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead";
    pub const DE_TYPE_CODE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
    pub const DE_PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
    pub const DE_UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";

    // SubmissionSet.
    pub const SUBMISSION_SET_NODE: &str = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd";
    pub const SS_AUTHOR: &str = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d";
    pub const SS_CONTENT_TYPE_CODE: &str = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500";
    pub const SS_PATIENT_ID: &str = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446";
    pub const SS_SOURCE_ID: &str = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832";
    pub const SS_UNIQUE_ID: &str = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8";

    // Folder.
    pub const FOLDER_NODE: &str = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2";
    pub const FOL_CODE_LIST: &str = "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5";
    pub const FOL_PATIENT_ID: &str = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a";
    pub const FOL_UNIQUE_ID: &str = "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a";

    /// The referenceIdList slot (ITI TF-3 4.2.3.2.28).
    pub const REFERENCE_ID_LIST: &str = "urn:ihe:iti:xds:2013:referenceIdList";
    /// CXi identifier type codes of referenceIdList values.
    pub const REF_STUDY_UID: &str = "urn:ihe:iti:xds:2013:studyInstanceUID";
    /// The Study Instance UID type as ITI TF-3 Table 4.2.3.2.28-1 lists it since 2016; read
    /// as well (other gateways write it).
    pub const REF_STUDY_UID_2016: &str = "urn:ihe:iti:xds:2016:studyInstanceUID";
    pub const REF_ACCESSION: &str = "urn:ihe:iti:xds:2013:accession";
}
