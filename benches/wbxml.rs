//! WBXML codec throughput against libwbxml2 (linked from Debian's `libwbxml2-dev`), side by
//! side on the same messages.
//!
//! * encode: a message to WBXML. libwbxml2 converts the message's XML text (its only input
//!   form: `wbxml_conv_xml2wbxml_run`); we run both our model → WBXML encoder and our full
//!   XML text → WBXML path (`xml::decode` + `wbxml::encode`). Throughput counts the message's
//!   compact XML bytes for all three, so the figures compare directly.
//! * decode: the WBXML that libwbxml2 itself produces for the message (string table, opaque
//!   data: what devices send) to a usable form. libwbxml2 converts it to XML text
//!   (`wbxml_conv_wbxml2xml_run`); we run our WBXML → model decoder and our WBXML → XML text
//!   path (`wbxml::decode` + `xml::encode`). Throughput counts the WBXML bytes.
//!
//! Two workloads: the 20 real SyncML messages of `shared/vectors` plus three session samples
//! (small messages), and one large message (a package-3 answer with 400 results).
//!
//! `cargo bench --bench wbxml` prints a summary table first, then criterion's figures.

use std::ffi::{c_int, c_uchar, c_uint, c_void};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use dmdeleg::syncml::StatusCode;
use dmdeleg::syncml::message::*;
use dmdeleg::syncml::{wbxml, xml};

// ---------------------------------------------------------------------------------------------
// libwbxml2 (wbxml_conv.h of libwbxml 0.11)
// ---------------------------------------------------------------------------------------------

#[repr(C)]
struct WbxmlConvXml2Wbxml {
    _private: [u8; 0],
}

#[repr(C)]
struct WbxmlConvWbxml2Xml {
    _private: [u8; 0],
}

/// `WBXML_OK`.
const WBXML_OK: c_int = 0;
/// `WBXML_VERSION_12`.
const WBXML_VERSION_12: c_int = 0x02;
/// `WBXML_GEN_XML_COMPACT`.
const WBXML_GEN_XML_COMPACT: c_int = 0;

#[link(name = "wbxml2")]
unsafe extern "C" {
    fn wbxml_conv_xml2wbxml_create(conv: *mut *mut WbxmlConvXml2Wbxml) -> c_int;
    fn wbxml_conv_xml2wbxml_set_version(conv: *mut WbxmlConvXml2Wbxml, version: c_int);
    fn wbxml_conv_xml2wbxml_enable_preserve_whitespaces(conv: *mut WbxmlConvXml2Wbxml);
    fn wbxml_conv_xml2wbxml_disable_string_table(conv: *mut WbxmlConvXml2Wbxml);
    fn wbxml_conv_xml2wbxml_run(
        conv: *mut WbxmlConvXml2Wbxml,
        xml: *mut c_uchar,
        xml_len: c_uint,
        wbxml: *mut *mut c_uchar,
        wbxml_len: *mut c_uint,
    ) -> c_int;
    fn wbxml_conv_xml2wbxml_destroy(conv: *mut WbxmlConvXml2Wbxml);

    fn wbxml_conv_wbxml2xml_create(conv: *mut *mut WbxmlConvWbxml2Xml) -> c_int;
    fn wbxml_conv_wbxml2xml_set_gen_type(conv: *mut WbxmlConvWbxml2Xml, gen_type: c_int);
    fn wbxml_conv_wbxml2xml_enable_preserve_whitespaces(conv: *mut WbxmlConvWbxml2Xml);
    fn wbxml_conv_wbxml2xml_run(
        conv: *mut WbxmlConvWbxml2Xml,
        wbxml: *mut c_uchar,
        wbxml_len: c_uint,
        xml: *mut *mut c_uchar,
        xml_len: *mut c_uint,
    ) -> c_int;
    fn wbxml_conv_wbxml2xml_destroy(conv: *mut WbxmlConvWbxml2Xml);

    /// libwbxml's deallocator for the buffers it returns.
    fn wbxml_free(memblock: *mut c_void);
}

/// Copies and frees a buffer returned by libwbxml.
///
/// # Safety
/// `ptr` must be a buffer of `len` bytes allocated by libwbxml (or null).
unsafe fn take_buffer(ptr: *mut c_uchar, len: c_uint) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: libwbxml returned `len` initialised bytes at `ptr`.
    let out = unsafe { std::slice::from_raw_parts(ptr, len as usize) }.to_vec();
    // SAFETY: the buffer was allocated by libwbxml and is freed once.
    unsafe { wbxml_free(ptr.cast()) };
    out
}

/// libwbxml2's WBXML 1.2 of an XML document (whitespace kept, string table on).
fn libwbxml_xml2wbxml(xml_doc: &mut [u8]) -> Vec<u8> {
    libwbxml_xml2wbxml_with(xml_doc, true)
}

/// libwbxml2's WBXML 1.2 of an XML document (whitespace kept), with or without its string
/// table (whose construction grows quadratically with the document).
fn libwbxml_xml2wbxml_with(xml_doc: &mut [u8], string_table: bool) -> Vec<u8> {
    let len = c_uint::try_from(xml_doc.len()).expect("document under 4 GiB");
    let mut conv: *mut WbxmlConvXml2Wbxml = std::ptr::null_mut();
    let mut out: *mut c_uchar = std::ptr::null_mut();
    let mut out_len: c_uint = 0;
    // SAFETY: the converter is created, used with a live buffer of `len` bytes, and
    // destroyed; the output buffer is taken over by `take_buffer`.
    unsafe {
        assert_eq!(wbxml_conv_xml2wbxml_create(&mut conv), WBXML_OK);
        wbxml_conv_xml2wbxml_set_version(conv, WBXML_VERSION_12);
        wbxml_conv_xml2wbxml_enable_preserve_whitespaces(conv);
        if !string_table {
            wbxml_conv_xml2wbxml_disable_string_table(conv);
        }
        let rc = wbxml_conv_xml2wbxml_run(conv, xml_doc.as_mut_ptr(), len, &mut out, &mut out_len);
        wbxml_conv_xml2wbxml_destroy(conv);
        let bytes = take_buffer(out, out_len);
        assert_eq!(rc, WBXML_OK, "libwbxml xml2wbxml failed");
        bytes
    }
}

/// libwbxml2's compact XML of a WBXML document.
fn libwbxml_wbxml2xml(wbxml_doc: &mut [u8]) -> Vec<u8> {
    let len = c_uint::try_from(wbxml_doc.len()).expect("document under 4 GiB");
    let mut conv: *mut WbxmlConvWbxml2Xml = std::ptr::null_mut();
    let mut out: *mut c_uchar = std::ptr::null_mut();
    let mut out_len: c_uint = 0;
    // SAFETY: as in `libwbxml_xml2wbxml`.
    unsafe {
        assert_eq!(wbxml_conv_wbxml2xml_create(&mut conv), WBXML_OK);
        wbxml_conv_wbxml2xml_set_gen_type(conv, WBXML_GEN_XML_COMPACT);
        wbxml_conv_wbxml2xml_enable_preserve_whitespaces(conv);
        let rc =
            wbxml_conv_wbxml2xml_run(conv, wbxml_doc.as_mut_ptr(), len, &mut out, &mut out_len);
        wbxml_conv_wbxml2xml_destroy(conv);
        let bytes = take_buffer(out, out_len);
        assert_eq!(rc, WBXML_OK, "libwbxml wbxml2xml failed");
        bytes
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors");

/// The well-formed SyncML vectors, as our model.
fn vector_messages() -> Vec<SyncMl> {
    let mut out = Vec::new();
    let refused = [
        "testalertconfirm.xml",
        "testalertmultiplechoice.xml",
        "testalertsinglechoice.xml",
        "testalerttextinput.xml",
    ];
    for dir in ["spec-examples", "aosp-omadm/dm12"] {
        let mut names: Vec<String> = std::fs::read_dir(format!("{VECTORS}/{dir}"))
            .expect("shared/vectors beside the checkout")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".xml") && !refused.contains(&n.as_str()))
            .filter(|n| dir != "spec-examples" || n.starts_with("26-"))
            .collect();
        names.sort();
        for n in names {
            let bytes = std::fs::read(format!("{VECTORS}/{dir}/{n}")).unwrap();
            out.push(xml::decode(&bytes).unwrap_or_else(|e| panic!("{n}: {e}")));
        }
    }
    out
}

fn hdr() -> SyncHdr {
    SyncHdr {
        session_id: "1A2B".into(),
        msg_id: 3,
        target: LocRef::new("http://127.0.0.1:8080/mgmt-server"),
        source: LocRef {
            loc_uri: "IMEI:493005100592800".into(),
            loc_name: Some("dev".into()),
        },
        cred: Some(Cred {
            meta: Meta::format_type("b64", "syncml:auth-md5"),
            data: "Zz6EivR3yeaaENcRN6lpAQ==".into(),
        }),
        meta: Some(Meta {
            max_msg_size: Some(16384),
            ..Meta::default()
        }),
        ..SyncHdr::default()
    }
}

/// A device's package 3: statuses for 200 commands and 400 results of leaf values.
fn large_message() -> SyncMl {
    let mut commands = vec![Command::Status(Status::new(
        1,
        2,
        0,
        "SyncHdr",
        StatusCode::OK,
    ))];
    for i in 0..200u32 {
        commands.push(Command::Status(Status {
            target_refs: vec![format!("./Vendor/Sub{i:03}/Leaf")],
            ..Status::new(2 + i, 2, 10 + i, "Get", StatusCode::OK)
        }));
    }
    for i in 0..400u32 {
        commands.push(Command::Results(Results {
            cmd_id: 300 + i,
            msg_ref: Some(2),
            cmd_ref: 10 + i,
            items: vec![Item {
                source: Some(LocRef::new(format!(
                    "./Vendor/Sub{:03}/Leaf{:02}",
                    i / 4,
                    i % 4
                ))),
                meta: Some(Meta::format_type("chr", "text/plain")),
                data: Some(Data::Text(format!(
                    "value {i} with some text & <markup> for the leaf"
                ))),
                ..Item::default()
            }],
            ..Results::default()
        }));
    }
    SyncMl {
        hdr: hdr(),
        body: SyncBody {
            commands,
            is_final: true,
        },
    }
}

/// Messages of a session: package 1 with DevInfo and a generic alert.
fn sample_messages() -> Vec<SyncMl> {
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
                        devinfo("Man", "Device Factory, Inc."),
                        devinfo("Mod", "SmartPhone2000"),
                        devinfo("DmV", "1.2"),
                        devinfo("Lang", "en-US"),
                    ],
                    ..ItemCmd::default()
                }),
            ],
            is_final: true,
        },
    };
    vec![pkg1]
}

/// One workload: the messages, their compact XML, and libwbxml's WBXML of that XML.
struct Workload {
    name: &'static str,
    messages: Vec<SyncMl>,
    xml: Vec<Vec<u8>>,
    wbxml: Vec<Vec<u8>>,
}

impl Workload {
    fn new(name: &'static str, messages: Vec<SyncMl>) -> Workload {
        let xml: Vec<Vec<u8>> = messages.iter().map(xml::encode).collect();
        let wbxml: Vec<Vec<u8>> = xml
            .iter()
            .map(|x| libwbxml_xml2wbxml(&mut x.clone()))
            .collect();
        for (m, w) in messages.iter().zip(&wbxml) {
            // Both decoders read these bytes; ours to the same message (TNDS-free workloads).
            assert_eq!(wbxml::decode(w).as_ref(), Ok(m), "{name}");
        }
        Workload {
            name,
            messages,
            xml,
            wbxml,
        }
    }

    fn xml_bytes(&self) -> u64 {
        self.xml.iter().map(|x| x.len() as u64).sum()
    }

    fn wbxml_bytes(&self) -> u64 {
        self.wbxml.iter().map(|x| x.len() as u64).sum()
    }
}

fn workloads() -> Vec<Workload> {
    let mut small = vector_messages();
    small.extend(sample_messages());
    vec![
        Workload::new("vectors", small),
        Workload::new("large", vec![large_message()]),
    ]
}

// ---------------------------------------------------------------------------------------------
// The side-by-side summary
// ---------------------------------------------------------------------------------------------

/// MB/s of `f` over `bytes` per call, timed for about `budget`.
fn rate(bytes: u64, budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget {
        f();
        runs += 1;
    }
    (bytes * runs) as f64 / 1e6 / start.elapsed().as_secs_f64()
}

fn summary(loads: &[Workload]) {
    let budget = Duration::from_millis(1500);
    println!();
    println!("WBXML throughput, MB/s (encode: XML-text bytes of the message; decode: WBXML bytes)");
    println!(
        "{:<8} {:>14} {:>12} {:>14} {:>13} {:>8}",
        "workload", "libwbxml2", "libwbxml2 -n", "dmdeleg model", "dmdeleg text", "ratio"
    );
    for w in loads {
        let mut xml_in: Vec<Vec<u8>> = w.xml.clone();
        let mut wbxml_in: Vec<Vec<u8>> = w.wbxml.clone();
        let theirs = rate(w.xml_bytes(), budget, || {
            for x in xml_in.iter_mut() {
                black_box(libwbxml_xml2wbxml(x));
            }
        });
        let theirs_n = rate(w.xml_bytes(), budget, || {
            for x in xml_in.iter_mut() {
                black_box(libwbxml_xml2wbxml_with(x, false));
            }
        });
        let model = rate(w.xml_bytes(), budget, || {
            for m in &w.messages {
                black_box(wbxml::encode(black_box(m)));
            }
        });
        let text = rate(w.xml_bytes(), budget, || {
            for x in &w.xml {
                black_box(wbxml::xml_to_wbxml(black_box(x)).unwrap());
            }
        });
        println!(
            "{:<8} {:>10.1} enc {:>12.1} {:>14.1} {:>13.1} {:>7.0}x",
            w.name,
            theirs,
            theirs_n,
            model,
            text,
            model / theirs.max(theirs_n)
        );
        let theirs = rate(w.wbxml_bytes(), budget, || {
            for x in wbxml_in.iter_mut() {
                black_box(libwbxml_wbxml2xml(x));
            }
        });
        let model = rate(w.wbxml_bytes(), budget, || {
            for x in &w.wbxml {
                black_box(wbxml::decode(black_box(x)).unwrap());
            }
        });
        let text = rate(w.wbxml_bytes(), budget, || {
            for x in &w.wbxml {
                black_box(xml::encode(&wbxml::decode(black_box(x)).unwrap()));
            }
        });
        println!(
            "{:<8} {:>10.1} dec {:>12} {:>14.1} {:>13.1} {:>7.1}x",
            w.name,
            theirs,
            "-",
            model,
            text,
            model / theirs
        );
    }
    println!(
        "(ratio: dmdeleg model / the faster libwbxml2; `text` adds our XML parsing (encode) or \
         XML writing (decode), libwbxml2's own input/output form)"
    );
    println!();
}

// ---------------------------------------------------------------------------------------------
// Criterion
// ---------------------------------------------------------------------------------------------

fn bench(c: &mut Criterion) {
    let loads = workloads();
    summary(&loads);
    for w in &loads {
        let mut group = c.benchmark_group(format!("wbxml_encode_{}", w.name));
        group.throughput(Throughput::Bytes(w.xml_bytes()));
        let mut xml_in = w.xml.clone();
        group.bench_function("libwbxml2 xml->wbxml", |b| {
            b.iter(|| {
                for x in xml_in.iter_mut() {
                    black_box(libwbxml_xml2wbxml(x));
                }
            })
        });
        group.bench_function("dmdeleg model->wbxml", |b| {
            b.iter(|| {
                for m in &w.messages {
                    black_box(wbxml::encode(black_box(m)));
                }
            })
        });
        group.bench_function("dmdeleg xml->wbxml", |b| {
            b.iter(|| {
                for x in &w.xml {
                    black_box(wbxml::xml_to_wbxml(black_box(x)).unwrap());
                }
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("wbxml_decode_{}", w.name));
        group.throughput(Throughput::Bytes(w.wbxml_bytes()));
        let mut wbxml_in = w.wbxml.clone();
        group.bench_function("libwbxml2 wbxml->xml", |b| {
            b.iter(|| {
                for x in wbxml_in.iter_mut() {
                    black_box(libwbxml_wbxml2xml(x));
                }
            })
        });
        group.bench_function("dmdeleg wbxml->model", |b| {
            b.iter(|| {
                for x in &w.wbxml {
                    black_box(wbxml::decode(black_box(x)).unwrap());
                }
            })
        });
        group.bench_function("dmdeleg wbxml->xml", |b| {
            b.iter(|| {
                for x in &w.wbxml {
                    black_box(xml::encode(&wbxml::decode(black_box(x)).unwrap()));
                }
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
