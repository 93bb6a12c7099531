//! Orthanc (Debian package) with its DICOMweb plugin as a real peer: started on free ports
//! with a generated configuration, loaded by DCMTK storescu.

use super::peer::PeerProcess;
use super::{free_port, require_tool};
use beeldbrug::dimse::sop;
use std::path::Path;

pub const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// Orthanc in its own process group, killed (and reaped) when dropped.
pub struct Orthanc {
    pub process: PeerProcess,
    pub http_port: u16,
    pub dicom_port: u16,
}

impl Orthanc {
    pub async fn start(dir: &Path) -> Orthanc {
        Self::start_with(dir, &[]).await
    }

    /// Start with `modalities` (AE title, port on 127.0.0.1) known as C-MOVE destinations.
    pub async fn start_with(dir: &Path, modalities: &[(&str, u16)]) -> Orthanc {
        Self::start_configured(dir, modalities, serde_json::json!({})).await
    }

    /// [`Orthanc::start_with`], with the keys of `extra` (a JSON object) added to or
    /// replacing those of the generated configuration (e.g. DICOM TLS).
    pub async fn start_configured(
        dir: &Path,
        modalities: &[(&str, u16)],
        extra: serde_json::Value,
    ) -> Orthanc {
        let program = require_tool("Orthanc");
        assert!(
            Path::new(PLUGIN).exists(),
            "Orthanc's DICOMweb plugin {PLUGIN} is not installed: run `apt-get install -y \
             orthanc-dicomweb` (or `bash .ci/run`, which installs the test peers)"
        );
        let (http_port, dicom_port) = (free_port(), free_port());
        let storage = dir.join("orthanc-storage");
        let known: serde_json::Map<String, serde_json::Value> = modalities
            .iter()
            .map(|(ae, port)| (ae.to_string(), serde_json::json!([ae, "127.0.0.1", port])))
            .collect();
        let mut config = serde_json::json!({
            "Name": "beeldbrug-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "Plugins": [PLUGIN],
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomServerEnabled": true,
            "DicomAet": "ORTHANC",
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": false,
            "DicomAlwaysAllowEcho": true,
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowFind": true,
            "DicomAlwaysAllowGet": true,
            "DicomAlwaysAllowMove": true,
            "UnknownSopClassAccepted": true,
            "SaveJobs": false,
            "DicomModalities": known,
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/",
                          "StudiesMetadata": "Full", "SeriesMetadata": "Full" },
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
        }
        let cfg = dir.join("orthanc.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(&config).expect("json")).expect("config");
        let args = [cfg.display().to_string()];
        let mut process = PeerProcess::spawn("orthanc", &program, &args, dir);
        process.wait_for_port(http_port).await;
        process.wait_for_port(dicom_port).await;
        Orthanc {
            process,
            http_port,
            dicom_port,
        }
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// C-STORE `files` with storescu, one association per transfer syntax family (storescu
/// proposes uncompressed syntaxes only unless told: `-xr` RLE, `-xy` JPEG Baseline, `-xs`
/// JPEG Lossless SV1). A file in any other syntax is refused here rather than left out.
pub fn store(port: u16, aec: &str, files: &[beeldbrug::testdata::GeneratedFile]) {
    let storable = [
        sop::RLE_LOSSLESS,
        sop::JPEG_BASELINE,
        sop::JPEG_LOSSLESS_SV1,
    ];
    for f in files {
        assert!(
            sop::is_native_le(&f.transfer_syntax) || storable.contains(&f.transfer_syntax.as_str()),
            "store() has no storescu option for {} ({})",
            f.path.display(),
            f.transfer_syntax
        );
    }
    for (flag, ts) in [
        (None, None),
        (Some("-xr"), Some(sop::RLE_LOSSLESS)),
        (Some("-xy"), Some(sop::JPEG_BASELINE)),
        (Some("-xs"), Some(sop::JPEG_LOSSLESS_SV1)),
    ] {
        let paths: Vec<String> = files
            .iter()
            .filter(|f| match ts {
                None => sop::is_native_le(&f.transfer_syntax),
                Some(ts) => f.transfer_syntax == ts,
            })
            .map(|f| f.path.display().to_string())
            .collect();
        if paths.is_empty() {
            continue;
        }
        let port = port.to_string();
        let mut args: Vec<&str> = flag.into_iter().collect();
        args.extend(["-aec", aec, "127.0.0.1", port.as_str()]);
        args.extend(paths.iter().map(String::as_str));
        let out = super::dcmtk("storescu", &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("E:"),
            "storescu {flag:?} to {aec} failed: {stderr}"
        );
    }
}
