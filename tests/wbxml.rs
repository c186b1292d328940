//! The WBXML codec (`dmdeleg::syncml::wbxml`) against an independent implementation —
//! Debian's libwbxml2 tools `xml2wbxml` and `wbxml2xml` (package `libwbxml2-utils`, which CI
//! installs; these tests fail, not skip, without it) — on the real messages of
//! `shared/vectors`, on sample and random messages; plus round trips and hostile input.
//!
//! Both directions are checked for each message `m` (written as XML by our XML codec):
//! * `xml2wbxml -k [-n] -v 1.2` on our XML, then our `wbxml::decode` of its output, equals
//!   `xml::decode` of the XML;
//! * `wbxml2xml -m 0 -k` on our `wbxml::encode(m)`, then `xml::decode` of its XML, equals `m`.
//!
//! `-k` (keep whitespace) makes libwbxml carry `Item/Data` text exactly; without it libwbxml
//! trims text, which would not be the same document. `Item/Data` inline XML is compared after
//! [`canon`]: libwbxml embeds a TNDS `MgmtTree` as a WBXML document in `OPAQUE` (which we
//! decode back to markup, compared as a parsed `TndsDocument`), and `wbxml2xml` renders our
//! `OPAQUE` markup as a CDATA section (so it comes back as text with the same characters).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use dmdeleg::dm::tnds::TndsDocument;
use dmdeleg::syncml::StatusCode;
use dmdeleg::syncml::message::*;
use dmdeleg::syncml::wbxml::{self, AnyError, WbxmlError};
use dmdeleg::syncml::xml::{self, DecodeLimits};
use proptest::prelude::*;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors");

// ---------------------------------------------------------------------------------------------
// libwbxml2 tools
// ---------------------------------------------------------------------------------------------

/// The path of a libwbxml2 tool; fails the test with instructions when it is missing.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: these tests compare with Debian's libwbxml2 tools; \
             run `apt-get install -y libwbxml2-utils libwbxml2-dev` (CI installs them)"
        )
    })
}

/// A unique path in the temporary directory.
fn temp_path(ext: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "dmdeleg-wbxml-test-{}-{n}.{ext}",
        std::process::id()
    ))
}

/// Removes the files when dropped.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs `tool args... -o OUT IN` on `input`, returning the output file's bytes, or the
/// tool's complaint.
fn run_tool(name: &str, args: &[&str], input: &[u8], in_ext: &str) -> Result<Vec<u8>, String> {
    let (inp, out) = (temp_path(in_ext), temp_path("out"));
    let _cleanup = TempFiles(vec![inp.clone(), out.clone()]);
    std::fs::File::create(&inp)
        .and_then(|mut f| f.write_all(input))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", inp.display()));
    let output = Process::new(tool(name))
        .args(args)
        .arg("-o")
        .arg(&out)
        .arg(&inp)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let result = std::fs::read(&out).unwrap_or_default();
    if !output.status.success() || result.is_empty() {
        return Err(format!(
            "{name} {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(result)
}

/// `xml2wbxml -k -v 1.2 [-n]`: libwbxml's WBXML of an XML document.
fn libwbxml_encode(xml: &[u8], string_table: bool) -> Vec<u8> {
    let mut args = vec!["-k", "-v", "1.2"];
    if !string_table {
        args.push("-n");
    }
    run_tool("xml2wbxml", &args, xml, "xml")
        .unwrap_or_else(|e| panic!("{e}\ninput:\n{}", String::from_utf8_lossy(xml)))
}

/// `wbxml2xml -m 0 -k`: libwbxml's XML of a WBXML document.
fn libwbxml_decode(wbxml: &[u8]) -> Vec<u8> {
    run_tool("wbxml2xml", &["-m", "0", "-k"], wbxml, "wbxml")
        .unwrap_or_else(|e| panic!("{e}\ninput: {wbxml:02X?}"))
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

/// How `Item/Data` inline XML is compared.
#[derive(Clone, Copy)]
enum Inline {
    /// A TNDS document by its parsed form (re-serialised): xml2wbxml embeds TNDS as a WBXML
    /// document, which we decode back to (differently written) markup.
    Tnds,
    /// By its characters: wbxml2xml renders our `OPAQUE` markup as character data.
    Chars,
}

fn canon_data(d: &Data, how: Inline) -> Data {
    match (d, how) {
        (Data::Text(t), _) => Data::Text(t.clone()),
        (Data::Xml(x), Inline::Tnds) => match TndsDocument::from_xml(x.as_bytes()) {
            Ok(doc) => Data::Xml(doc.to_xml()),
            Err(_) => Data::Xml(x.clone()),
        },
        (Data::Xml(x), Inline::Chars) => Data::Text(x.clone()),
    }
}

fn canon_items(items: &mut [Item], how: Inline) {
    for item in items {
        if let Some(d) = &item.data {
            item.data = Some(canon_data(d, how));
        }
    }
}

fn canon_commands(cmds: &mut [Command], how: Inline) {
    for c in cmds {
        match c {
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Get(c)
            | Command::Copy(c) => canon_items(&mut c.items, how),
            Command::Alert(c) => canon_items(&mut c.items, how),
            Command::Exec(c) => canon_items(std::slice::from_mut(&mut c.item), how),
            Command::Atomic(c) | Command::Sequence(c) => canon_commands(&mut c.commands, how),
            Command::Results(c) => canon_items(&mut c.items, how),
            Command::Status(c) => canon_items(&mut c.items, how),
        }
    }
}

/// The message with every `Item/Data` in comparable form (see [`Inline`]).
fn canon(m: &SyncMl, how: Inline) -> SyncMl {
    let mut m = m.clone();
    canon_commands(&mut m.body.commands, how);
    m
}

/// At most 1,500 characters of a document, for failure messages.
fn excerpt(doc: &[u8]) -> String {
    let s = String::from_utf8_lossy(doc);
    match s.char_indices().nth(1500) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.into_owned(),
    }
}

/// xml2wbxml encodes `xml_doc`, we decode: the result is `expected`.
fn check_libwbxml_encoding(xml_doc: &[u8], expected: &SyncMl, string_table: bool, name: &str) {
    let theirs = libwbxml_encode(xml_doc, string_table);
    let ours = wbxml::decode(&theirs).unwrap_or_else(|e| {
        panic!(
            "{name}: our decoder refused libwbxml's WBXML: {e}\nWBXML: {:02X?}\nXML:\n{}",
            theirs.get(..400).unwrap_or(&theirs),
            excerpt(xml_doc)
        )
    });
    assert_eq!(
        canon(&ours, Inline::Tnds),
        canon(expected, Inline::Tnds),
        "{name}: our decoding of xml2wbxml's output differs from the XML codec's"
    );
}

/// Both directions through libwbxml for the XML document `xml` (which our XML codec reads
/// as `expected`). `string_table` picks xml2wbxml's string table (default) or `-n`.
fn check_with_libwbxml(xml_doc: &[u8], expected: &SyncMl, string_table: bool, name: &str) {
    // libwbxml's SyncML 1.1 code page lacks the 1.2 tags (`Correlator`), which it then writes
    // as literal tags: those need its string table.
    let string_table = string_table || expected.hdr.version == SyncMlVersion::V1_1;
    // libwbxml encodes, we decode. (libwbxml refuses a TNDS `MgmtTree` inside SyncML 1.1:
    // it embeds TNDS only in SyncML 1.2 documents.)
    let tnds_in_1_1 = expected.hdr.version == SyncMlVersion::V1_1
        && format!("{expected:?}").contains("<MgmtTree");
    if !tnds_in_1_1 {
        check_libwbxml_encoding(xml_doc, expected, string_table, name);
    }
    // We encode, libwbxml decodes.
    let ours = wbxml::encode(expected);
    let their_xml = libwbxml_decode(&ours);
    let back = xml::decode(&their_xml).unwrap_or_else(|e| {
        panic!(
            "{name}: wbxml2xml's XML of our WBXML does not decode: {e}\n{}",
            excerpt(&their_xml)
        )
    });
    assert_eq!(
        canon(&back, Inline::Chars),
        canon(expected, Inline::Chars),
        "{name}: wbxml2xml's rendering of our WBXML differs\n{}",
        excerpt(&their_xml)
    );

    // And our own round trip, exactly.
    assert_eq!(
        wbxml::decode(&ours).as_ref(),
        Ok(expected),
        "{name}: round trip"
    );
}

// ---------------------------------------------------------------------------------------------
// Real messages
// ---------------------------------------------------------------------------------------------

fn vector(rel: &str) -> Vec<u8> {
    let path = format!("{VECTORS}/{rel}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn sorted_xml_files(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("{VECTORS}/{dir}"))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    names
}

/// The well-formed SyncML vectors: spec examples 26-* and the decodable AOSP DM 1.2 ones.
fn message_vectors() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in sorted_xml_files("spec-examples") {
        if name.starts_with("26-") {
            out.push((name.clone(), vector(&format!("spec-examples/{name}"))));
        }
    }
    let refused = [
        "testalertconfirm.xml",
        "testalertmultiplechoice.xml",
        "testalertsinglechoice.xml",
        "testalerttextinput.xml",
    ];
    for name in sorted_xml_files("aosp-omadm/dm12") {
        if !refused.contains(&name.as_str()) {
            out.push((name.clone(), vector(&format!("aosp-omadm/dm12/{name}"))));
        }
    }
    assert_eq!(out.len(), 20);
    out
}

#[test]
fn libwbxml_tools_are_installed() {
    tool("xml2wbxml");
    tool("wbxml2xml");
}

#[test]
fn vectors_agree_with_libwbxml() {
    for (i, (name, bytes)) in message_vectors().into_iter().enumerate() {
        let msg = xml::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The vector as written (indented, comments, DOCTYPEs), and as our XML writer writes
        // its model.
        check_with_libwbxml(&bytes, &msg, i % 2 == 0, &name);
        check_with_libwbxml(&xml::encode(&msg), &msg, i % 2 == 1, &name);
    }
}

#[test]
fn sample_messages_agree_with_libwbxml() {
    for (name, msg) in samples() {
        check_with_libwbxml(&xml::encode(&msg), &msg, true, name);
        check_with_libwbxml(xml::encode_pretty(&msg).as_bytes(), &msg, false, name);
    }
}

#[test]
fn libwbxml_uses_the_public_ids_we_read() {
    let msg = samples().remove(0).1;
    let theirs = libwbxml_encode(&xml::encode(&msg), true);
    assert_eq!(&theirs[..3], &[0x02, 0xA4, 0x01], "SyncML 1.2 is 0x1201");
    let mut v11 = msg;
    v11.hdr.version = SyncMlVersion::V1_1;
    let doc = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE SyncML PUBLIC \"-//SYNCML//DTD SyncML 1.1//EN\" \
         \"http://www.syncml.org/docs/syncml_represent_v11_20020213.dtd\">\n{}",
        String::from_utf8(xml::encode(&v11)).unwrap()
    );
    let theirs = libwbxml_encode(doc.as_bytes(), true);
    assert_eq!(&theirs[..3], &[0x02, 0x9F, 0x53], "SyncML 1.1 is 0x0FD3");
    assert_eq!(wbxml::decode(&theirs), Ok(v11.clone()));
    assert_eq!(&wbxml::encode(&v11)[..3], &[0x02, 0x9F, 0x53]);
    let xml_back = libwbxml_decode(&wbxml::encode(&v11));
    assert!(
        String::from_utf8_lossy(&xml_back).contains("<SyncML xmlns=\"SYNCML:SYNCML1.1\">"),
        "{}",
        String::from_utf8_lossy(&xml_back)
    );
}

/// The original AOSP test messages were WBXML declaring the SyncML 1.1 public id while
/// carrying DM/1.2; rebuilt here from their libwbxml decoding.
#[test]
fn syncml_1_1_public_id_with_dm_1_2_decodes() {
    for name in ["testadd", "testdelete", "testget", "testreplace"] {
        let xml_doc = vector(&format!("aosp-omadm/dm12/{name}.decoded-by-libwbxml.xml"));
        let expected = xml::decode(&xml_doc).unwrap();
        let mut wbxml_doc = libwbxml_encode(&xml_doc, true);
        if expected.hdr.version == SyncMlVersion::V1_2 {
            // testreplace's decoding names SyncML 1.2: put the 1.1 id back by hand.
            assert_eq!(&wbxml_doc[1..3], &[0xA4, 0x01], "{name}");
            wbxml_doc.splice(1..3, [0x9F, 0x53]);
        }
        assert_eq!(&wbxml_doc[1..3], &[0x9F, 0x53], "{name}: public id 0x0FD3");
        let msg = wbxml::decode(&wbxml_doc).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(msg.hdr.version, SyncMlVersion::V1_1);
        assert_eq!(msg.hdr.ver_dtd, "1.2");
        assert_eq!(msg.hdr.ver_proto, "DM/1.2");
        let mut as_1_1 = expected.clone();
        as_1_1.hdr.version = SyncMlVersion::V1_1;
        assert_eq!(msg, as_1_1, "{name}");
        assert!(msg.body.is_final);
        // The session layer sees a DM 1.2 message either way.
        assert_eq!(msg.body, expected.body);
        // WBXML 1.3 header.
        let mut v13 = wbxml_doc.clone();
        v13[0] = 0x03;
        assert_eq!(wbxml::decode(&v13).as_ref(), Ok(&msg));
    }
}

#[test]
fn decode_any_reads_every_form() {
    for (name, bytes) in message_vectors() {
        let msg = xml::decode(&bytes).unwrap();
        let pretty = xml::encode_pretty(&msg);
        assert_eq!(wbxml::decode_any(&bytes).as_ref(), Ok(&pretty), "{name}");
        let theirs = libwbxml_encode(&bytes, true);
        let ours = wbxml::decode_any(&theirs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            xml::decode(ours.as_bytes()).map(|m| canon(&m, Inline::Tnds)),
            Ok(canon(&msg, Inline::Tnds)),
            "{name}"
        );
        assert_eq!(
            wbxml::xml_to_wbxml(&bytes).as_ref(),
            Ok(&wbxml::encode(&msg)),
            "{name}"
        );
        assert_eq!(wbxml::to_xml_pretty(&wbxml::encode(&msg)), Ok(pretty));
    }
    // TNDS, XML and WBXML, ours and libwbxml's.
    let tnds_xml = vector("spec-examples/synthetic-tnds-dmacc.xml");
    let doc = TndsDocument::from_xml(&tnds_xml).unwrap();
    assert_eq!(wbxml::decode_any(&tnds_xml), Ok(doc.to_xml_pretty()));
    let ours = wbxml::xml_to_wbxml(&tnds_xml).unwrap();
    assert_eq!(wbxml::decode_any(&ours), Ok(doc.to_xml_pretty()));
    let theirs = libwbxml_encode(&tnds_xml, true);
    assert_eq!(wbxml::decode_any(&theirs), Ok(doc.to_xml_pretty()));
    let their_xml = libwbxml_decode(&ours);
    assert_eq!(TndsDocument::from_xml(&their_xml), Ok(doc));
    // Not a message.
    assert!(matches!(
        wbxml::decode_any(b"<html><body/></html>"),
        Err(AnyError::Unknown { .. })
    ));
    let e = wbxml::decode_any(b"\x03\x01\x6A\x00\x6D\x6C").unwrap_err();
    assert!(e.to_string().contains("at byte 6"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Samples
// ---------------------------------------------------------------------------------------------

fn hdr() -> SyncHdr {
    SyncHdr {
        session_id: "1A2B".into(),
        msg_id: 2,
        target: LocRef::new("IMEI:493005100592800"),
        source: LocRef {
            loc_uri: "http://127.0.0.1:8080/mgmt-server".into(),
            loc_name: Some("srv".into()),
        },
        cred: Some(Cred {
            meta: Meta::format_type("b64", "syncml:auth-md5"),
            data: "Zz6EivR3yeaaENcRN6lpAQ==".into(),
        }),
        meta: Some(Meta {
            max_msg_size: Some(16384),
            max_obj_size: Some(1 << 20),
            ..Meta::default()
        }),
        ..SyncHdr::default()
    }
}

/// Messages a DM session produces: package 1, a server package with every command, results
/// with TNDS, a generic alert, a large object chunk.
fn samples() -> Vec<(&'static str, SyncMl)> {
    let tnds = String::from_utf8(vector("spec-examples/synthetic-tnds-dmacc.xml")).unwrap();
    let tnds = tnds[tnds.find("<MgmtTree").unwrap()..].trim().to_owned();
    let devinfo = |leaf: &str, value: &str| Item {
        source: Some(LocRef::new(format!("./DevInfo/{leaf}"))),
        meta: Some(Meta::format_type("chr", "text/plain")),
        data: Some(Data::Text(value.into())),
        ..Item::default()
    };
    let pkg1 = SyncMl {
        hdr: hdr(),
        body: SyncBody {
            commands: vec![
                Command::Alert(Alert {
                    cmd_id: 1,
                    data: Some("1201".into()),
                    ..Alert::default()
                }),
                Command::Replace(ItemCmd {
                    cmd_id: 2,
                    items: vec![
                        devinfo("DevId", "IMEI:493005100592800"),
                        devinfo("Man", "Device Factory, Inc. & Sons <EU>"),
                        devinfo("Mod", "SmartPhone2000 — é€"),
                        devinfo("DmV", "1.2"),
                        devinfo("Lang", "en-US"),
                    ],
                    ..ItemCmd::default()
                }),
                Command::Alert(Alert {
                    cmd_id: 3,
                    data: Some("1226".into()),
                    correlator: Some("abc123".into()),
                    items: vec![Item {
                        source: Some(LocRef::new("./FUMO/DownloadAndUpdate")),
                        meta: Some(Meta {
                            mark: Some("critical".into()),
                            ..Meta::format_type(
                                "int",
                                "org.openmobilealliance.dm.firmwareupdate.downloadandupdate",
                            )
                        }),
                        data: Some(Data::Text("200".into())),
                        ..Item::default()
                    }],
                    ..Alert::default()
                }),
            ],
            is_final: true,
        },
    };
    let mut server_hdr = hdr();
    server_hdr.cred = None;
    server_hdr.resp_uri = Some("http://127.0.0.1:8080/dm?s=1A2B&m=3".into());
    let pkg2 = SyncMl {
        hdr: server_hdr,
        body: SyncBody {
            commands: vec![
                Command::Status(Status {
                    target_refs: vec!["http://127.0.0.1:8080/mgmt-server".into()],
                    source_refs: vec!["IMEI:493005100592800".into()],
                    chal: Some(Chal {
                        meta: Meta {
                            next_nonce: Some("bm9uY2UxMjM0NTY=".into()),
                            ..Meta::format_type("b64", "syncml:auth-md5")
                        },
                    }),
                    ..Status::new(1, 1, 0, "SyncHdr", StatusCode(212))
                }),
                Command::Status(Status::new(2, 1, 1, "Alert", StatusCode::OK)),
                Command::Get(ItemCmd {
                    cmd_id: 3,
                    items: vec![Item::with_target("./DevDetail/Ext/Conf")],
                    ..ItemCmd::default()
                }),
                Command::Add(ItemCmd {
                    cmd_id: 4,
                    items: vec![Item {
                        target: Some(LocRef::new("./DMAcc")),
                        meta: Some(Meta::format_type(
                            "xml",
                            "application/vnd.syncml.dmtnds+xml",
                        )),
                        data: Some(Data::Xml(tnds.clone())),
                        ..Item::default()
                    }],
                    ..ItemCmd::default()
                }),
                Command::Atomic(Container {
                    cmd_id: 5,
                    commands: vec![
                        Command::Replace(ItemCmd {
                            cmd_id: 6,
                            no_resp: true,
                            meta: Some(Meta::format_type("int", "text/plain")),
                            items: vec![Item {
                                data: Some(Data::Text("42".into())),
                                ..Item::with_target("./Vendor/Counter")
                            }],
                            ..ItemCmd::default()
                        }),
                        Command::Delete(ItemCmd {
                            cmd_id: 7,
                            items: vec![Item::with_target("./Vendor/Old")],
                            ..ItemCmd::default()
                        }),
                        Command::Sequence(Container {
                            cmd_id: 8,
                            meta: Some(Meta::default()),
                            commands: vec![Command::Copy(ItemCmd {
                                cmd_id: 9,
                                items: vec![Item {
                                    source: Some(LocRef::new("./a")),
                                    ..Item::with_target("./b")
                                }],
                                ..ItemCmd::default()
                            })],
                            ..Container::default()
                        }),
                    ],
                    ..Container::default()
                }),
                Command::Exec(Exec {
                    cmd_id: 10,
                    correlator: Some("fw-1".into()),
                    item: Item {
                        data: Some(Data::Text("".into())),
                        ..Item::with_target("./FUMO/DownloadAndUpdate")
                    },
                    ..Exec::default()
                }),
                Command::Alert(Alert {
                    cmd_id: 11,
                    data: Some("1101".into()),
                    items: vec![
                        Item {
                            data: Some(Data::Text("MINDT=10&MAXDT=30&DR=1".into())),
                            ..Item::default()
                        },
                        Item {
                            data: Some(Data::Text(
                                "Install the update?\nIt takes 5 minutes.".into(),
                            )),
                            ..Item::default()
                        },
                    ],
                    ..Alert::default()
                }),
            ],
            is_final: true,
        },
    };
    let pkg3 = SyncMl {
        hdr: SyncHdr { msg_id: 3, ..hdr() },
        body: SyncBody {
            commands: vec![
                Command::Status(Status::new(1, 2, 0, "SyncHdr", StatusCode::OK)),
                Command::Status(Status {
                    target_refs: vec!["./DevDetail/Ext/Conf".into()],
                    ..Status::new(2, 2, 3, "Get", StatusCode::OK)
                }),
                Command::Results(Results {
                    cmd_id: 3,
                    msg_ref: Some(2),
                    cmd_ref: 3,
                    meta: Some(Meta::format_type(
                        "xml",
                        "application/vnd.syncml.dmtnds+xml",
                    )),
                    source_ref: Some("./DevDetail/Ext/Conf".into()),
                    items: vec![
                        Item {
                            source: Some(LocRef::new("./DevDetail/Ext/Conf")),
                            data: Some(Data::Xml(tnds)),
                            ..Item::default()
                        },
                        Item {
                            source: Some(LocRef::new("./DevDetail/Ext/Big")),
                            meta: Some(Meta {
                                size: Some(100_000),
                                ..Meta::format_type("b64", "application/octet-stream")
                            }),
                            data: Some(Data::Text(
                                "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=".repeat(40),
                            )),
                            more_data: true,
                            ..Item::default()
                        },
                    ],
                    ..Results::default()
                }),
                Command::Status(Status {
                    items: vec![Item {
                        data: Some(Data::Text("2".into())),
                        ..Item::default()
                    }],
                    ..Status::new(4, 2, 11, "Alert", StatusCode::OK)
                }),
            ],
            is_final: false,
        },
    };
    vec![
        ("package 1", pkg1),
        ("package 2", pkg2),
        ("package 3", pkg3),
    ]
}

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

/// `<SyncML><SyncHdr>...</SyncHdr>` as tokens.
const HDR: &[u8] = b"\x6D\x6C\x71\x031.2\x00\x01\x72\x03DM/1.2\x00\x01\x65\x031\x00\x01\
    \x5B\x031\x00\x01\x6E\x57\x03t\x00\x01\x01\x67\x57\x03s\x00\x01\x01\x01";

/// A SyncML 1.2 WBXML 1.3 document with no string table around `body`.
fn doc(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x03, 0xA4, 0x01, 0x6A, 0x00];
    v.extend_from_slice(body);
    v
}

/// Hostile documents kept as a corpus: each must be refused with a typed, placed error.
fn hostile_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut deep = doc(HDR);
    deep.push(0x6B);
    for _ in 0..100_000 {
        deep.extend_from_slice(b"\x48\x4B\x031\x00\x01");
    }
    let mut deep_data = doc(HDR);
    deep_data.extend_from_slice(b"\x6B\x45\x4B\x031\x00\x01\x54\x4F");
    for _ in 0..100_000 {
        deep_data.extend_from_slice(b"\x00\x02\x64");
    }
    let mut many_pages = doc(b"\x6D");
    for _ in 0..100_000 {
        many_pages.extend_from_slice(b"\x00\x01\x00\x00");
    }
    vec![
        (
            "huge string table",
            vec![0x03, 0x01, 0x6A, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F, 0x00],
        ),
        (
            "mb_u_int32 of 6 bytes",
            vec![0x03, 0x81, 0x81, 0x81, 0x81, 0x81, 0x01],
        ),
        (
            "mb_u_int32 overflow",
            vec![0x03, 0x9F, 0xFF, 0xFF, 0xFF, 0x7F],
        ),
        ("huge opaque", doc(b"\x6D\xC3\x8F\xFF\xFF\xFF\x7Fxyz")),
        (
            "huge string table index",
            doc(b"\x6D\x83\x8F\xFF\xFF\xFF\x7F"),
        ),
        (
            "string table index past the end",
            vec![0x03, 0x01, 0x6A, 0x02, b'a', 0, 0x6D, 0x83, 0x02],
        ),
        (
            "literal tag past the table",
            vec![0x03, 0x01, 0x6A, 0x01, 0, 0x44, 0x09],
        ),
        (
            "literal public id past the table",
            vec![0x03, 0x00, 0x07, 0x6A, 0x00, 0x6D],
        ),
        ("unterminated inline string", doc(b"\x6D\x03abc")),
        ("unbalanced END", doc(b"\x01\x01")),
        ("deep Atomic nesting", deep),
        ("deep inline TNDS nesting", deep_data),
        ("endless page switches", many_pages),
        ("unknown tag", doc(b"\x6D\x7F")),
        ("extension token", doc(b"\x6D\x40\x03x\x00")),
        ("attribute token", doc(b"\xED\x05\x01\x01")),
        (
            "entity beyond Unicode",
            doc(b"\x6D\x02\x8F\xFF\xFF\xFF\x7F"),
        ),
        ("XML given to the WBXML decoder", b"<SyncML/>".to_vec()),
        ("empty", Vec::new()),
    ]
}

#[test]
fn hostile_inputs_are_refused_with_a_place() {
    for (name, bytes) in hostile_corpus() {
        let e = wbxml::decode(&bytes).expect_err(name);
        let shown = e.to_string();
        match name {
            "empty" => assert_eq!(e, WbxmlError::Empty),
            "XML given to the WBXML decoder" => {
                assert!(matches!(e, WbxmlError::NotWbxml { .. }), "{e}")
            }
            _ => assert!(
                e.byte().is_some() && shown.contains("byte"),
                "{name}: {shown}"
            ),
        }
        if name.starts_with("deep") {
            assert!(
                matches!(e, WbxmlError::TooDeep { limit: 64, .. }),
                "{name}: {e}"
            );
        }
        if name.starts_with("huge") {
            assert!(
                matches!(
                    e,
                    WbxmlError::Truncated { .. } | WbxmlError::BadStringRef { .. }
                ),
                "{name}: {e}"
            );
        }
        let _ = wbxml::decode_any(&bytes);
        let _ = wbxml::tnds_to_xml(&bytes);
    }
    // The limits of the XML codec apply.
    let big = wbxml::encode(&samples()[2].1);
    let limits = DecodeLimits {
        max_text_len: 100,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        wbxml::decode_with(&big, &limits),
        Err(WbxmlError::TextTooLarge { element, .. }) if element == "Data"
    ));
    let limits = DecodeLimits {
        max_depth: 4,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        wbxml::decode_with(&wbxml::encode(&samples()[1].1), &limits),
        Err(WbxmlError::TooDeep { limit: 4, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Property tests (the generator of tests/syncml_vectors.rs)
// ---------------------------------------------------------------------------------------------

mod common;
use common::syncml_gen::{DataKind, message};

/// The seeds for mutation: our encodings of the samples, libwbxml's of the vectors.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut out: Vec<Vec<u8>> = samples().iter().map(|(_, m)| wbxml::encode(m)).collect();
        for (i, (_, bytes)) in message_vectors().into_iter().enumerate() {
            out.push(libwbxml_encode(&bytes, i % 2 == 0));
        }
        out.extend(
            hostile_corpus()
                .into_iter()
                .map(|(_, b)| b)
                .filter(|b| b.len() < 4096),
        );
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random messages through libwbxml in both directions (32 cases: each spawns processes).
    #[test]
    fn libwbxml_agrees_on_random_messages(msg in message(DataKind::Libwbxml), table in any::<bool>()) {
        let xml_doc = xml::encode(&msg);
        check_with_libwbxml(&xml_doc, &msg, table, "random message");
    }
}

proptest! {
    #[test]
    fn random_messages_round_trip(msg in message(DataKind::Raw)) {
        let bytes = wbxml::encode(&msg);
        prop_assert_eq!(wbxml::decode(&bytes), Ok(msg.clone()));
        // The XML codec and ours agree on what is XML-representable.
        if !format!("{msg:?}").contains("\\0") {
            prop_assert_eq!(
                wbxml::decode_any(&bytes),
                Ok(xml::encode_pretty(&msg))
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        version in 0u8..5,
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut input = vec![version];
        input.extend_from_slice(&bytes);
        for doc in [&bytes[..], &input[..]] {
            if let Err(e) = wbxml::decode(doc) {
                let _ = e.to_string();
            }
            let _ = wbxml::decode_any(doc);
            let _ = wbxml::tnds_to_xml(doc);
        }
    }

    #[test]
    fn mutated_documents_never_panic(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let seeds = seeds();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        if !bytes.is_empty() {
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
        }
        let end = cut.index(bytes.len() + 1);
        for doc in [&bytes[..], &bytes[..end]] {
            if let Err(e) = wbxml::decode(doc) {
                let _ = e.to_string();
            }
            let _ = wbxml::decode_any(doc);
        }
    }
}

/// The tool paths must be absolute files (a sanity check of [`tool`] itself).
#[test]
fn tool_lookup() {
    assert!(Path::new(&tool("xml2wbxml")).is_absolute());
}

/// A throughput probe for profiling (`cargo test --release --test wbxml perf_probe --
/// --ignored --nocapture`); the comparison with libwbxml2 is `cargo bench --bench wbxml`.
#[test]
#[ignore]
fn perf_probe() {
    let mut msgs: Vec<SyncMl> = samples().into_iter().map(|(_, m)| m).collect();
    msgs.extend(
        message_vectors()
            .iter()
            .map(|(_, b)| xml::decode(b).unwrap()),
    );
    let docs: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| libwbxml_encode(&xml::encode(m), true))
        .collect();
    let bytes: usize = docs.iter().map(Vec::len).sum();
    let rounds = 20_000;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        for d in &docs {
            std::hint::black_box(wbxml::decode(std::hint::black_box(d)).unwrap());
        }
    }
    let s = t.elapsed().as_secs_f64();
    eprintln!("decode: {:.0} MB/s", (bytes * rounds) as f64 / 1e6 / s);
}
