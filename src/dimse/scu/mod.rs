//! The SCU side: open an association to a peer and run C-ECHO, C-FIND, C-STORE, C-MOVE and
//! C-GET. Used by the CLI and by the SCP for C-MOVE / C-GET sub-operations.

mod find;
mod get;
mod move_;
pub mod send;

use super::association::{Association, AssociationError};
use super::command::{CommandField, CommandSet};
use super::negotiate::{request, LinkOptions, ProposedContext};
use super::sop;
use super::Event;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

pub use find::{find, find_context, find_raw};
pub use get::{get, GetReport};
pub use move_::{move_study, MoveReport};
pub use send::{propose_for_files, send_file, store_files, SendError, StoreReport};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ScuOptions {
    pub host: String,
    pub port: u16,
    pub calling_ae: String,
    pub called_ae: String,
    pub link: LinkOptions,
    pub connect_timeout: Duration,
    /// DICOM TLS (PS3.15 B.1): the client configuration, and the name the peer's
    /// certificate must carry (empty: `host`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub tls_server_name: String,
    /// Refuse to connect in the clear (the peer is configured for TLS but no client
    /// configuration was loaded): fail closed rather than send patient data in the clear.
    pub require_tls: bool,
}

impl ScuOptions {
    pub fn new(host: &str, port: u16, calling_ae: &str, called_ae: &str) -> Self {
        ScuOptions {
            host: host.to_string(),
            port,
            calling_ae: calling_ae.to_string(),
            called_ae: called_ae.to_string(),
            link: LinkOptions::default(),
            connect_timeout: Duration::from_secs(10),
            tls: None,
            tls_server_name: String::new(),
            require_tls: false,
        }
    }
}

/// Open an association proposing `contexts`. TCP_NODELAY is set: without it each small
/// command PDU waits for a delayed ACK. With `opts.tls` the association runs over DICOM TLS
/// (PS3.15 B.1), the handshake within `connect_timeout`.
pub async fn connect(
    opts: &ScuOptions,
    contexts: &[ProposedContext],
) -> Result<Association, AssociationError> {
    use super::pdu::PduError;
    if opts.require_tls && opts.tls.is_none() {
        return Err(AssociationError::Protocol(
            "DICOM TLS is required toward this peer but no TLS client configuration is loaded"
                .into(),
        ));
    }
    let addr = format!("{}:{}", opts.host, opts.port);
    let stream = match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(&addr)).await {
        Err(_) => return Err(PduError::Timeout(opts.connect_timeout).into()),
        Ok(r) => r.map_err(PduError::Io)?,
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = &opts.tls else {
        return request(
            stream,
            addr,
            &opts.calling_ae,
            &opts.called_ae,
            &opts.link,
            contexts,
        )
        .await;
    };
    let name = if opts.tls_server_name.trim().is_empty() {
        opts.host.trim()
    } else {
        opts.tls_server_name.trim()
    };
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string()).map_err(|e| {
        PduError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a TLS server name: {e}"),
        ))
    })?;
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let stream =
        match tokio::time::timeout(opts.connect_timeout, connector.connect(server_name, stream))
            .await
        {
            Err(_) => return Err(PduError::Timeout(opts.connect_timeout).into()),
            Ok(r) => r.map_err(PduError::Io)?,
        };
    request(
        stream,
        addr,
        &opts.calling_ae,
        &opts.called_ae,
        &opts.link,
        contexts,
    )
    .await
}

/// Uncompressed syntaxes, explicit first.
pub fn native_syntaxes() -> Vec<String> {
    vec![
        sop::EXPLICIT_VR_LE.to_string(),
        sop::IMPLICIT_VR_LE.to_string(),
    ]
}

/// C-ECHO (PS3.7 9.1.5): returns the status.
pub async fn echo(opts: &ScuOptions) -> Result<u16, AssociationError> {
    let ctx = ProposedContext {
        abstract_syntax: sop::VERIFICATION.into(),
        transfer_syntaxes: native_syntaxes(),
        we_are_scp: false,
    };
    let mut assoc = connect(opts, &[ctx]).await?;
    let pc = assoc.contexts[0].id;
    let id = assoc.next_message_id();
    assoc
        .send_command(
            pc,
            &CommandSet::request(CommandField::CEchoRq, id, sop::VERIFICATION),
        )
        .await?;
    let status = wait_response(&mut assoc, CommandField::CEchoRsp, id)
        .await?
        .status();
    assoc.release().await?;
    Ok(status)
}

/// Wait for the response to message `id`, skipping nothing else: anything else is a
/// protocol error for a synchronous association.
pub(crate) async fn wait_response(
    assoc: &mut Association,
    field: CommandField,
    id: u16,
) -> Result<CommandSet, AssociationError> {
    match assoc.next_event().await? {
        Event::Command { command, .. }
            if command.field == field && command.message_id_responded == Some(id) =>
        {
            Ok(command)
        }
        Event::Aborted => Err(AssociationError::Aborted),
        Event::ReleaseRequested => Err(AssociationError::Released),
        other => Err(AssociationError::Protocol(format!(
            "expected {}, got {}",
            field.name(),
            super::association::describe_event(&other)
        ))),
    }
}
