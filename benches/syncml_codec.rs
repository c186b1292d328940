//! The SyncML DM XML codec on the messages of a lab session, and the packer that fits a
//! package into messages.
//!
//! * decode: a device's Package 3 (header status, two statuses, and the Results of
//!   `.?list=TNDS+ACL+Format+Type+Value+Title` on a simulated device: a ~50-node TNDS listing
//!   of ~10 KB) with the listing as inline XML (`Data::Xml`, as other clients send it) and as
//!   CDATA (as our simulated devices send it); and a small server Package 2 (statuses, a Get
//!   and two Replaces).
//! * encode: the same messages back to XML.
//! * fill: `packer::fill` of ten Add/Replace commands and the large Results into a message,
//!   once with room for all (MaxMsgSize 64 KiB) and once where the Results must be chunked
//!   (MaxMsgSize 8 KiB).
//!
//! The process uses mimalloc, as the `dmdeleg` binary does.
//!
//! `cargo bench --bench syncml_codec`

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use dmdeleg::dm::tree::Principal;
use dmdeleg::dm::uri::{ListKind, NodeUri, Query, Target};
use dmdeleg::sim::device::{SimAccount, SimDevice};
use dmdeleg::syncml::StatusCode;
use dmdeleg::syncml::auth::AuthScheme;
use dmdeleg::syncml::message::*;
use dmdeleg::syncml::session::packer::{self, Outgoing};
use dmdeleg::syncml::xml;

/// The allocator of the `dmdeleg` binary, so allocation costs are those of the lab.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVER_ID: &str = "dms1.example";
const SERVER_URL: &str = "http://127.0.0.1:8080/dm";
const DEV_ID: &str = "IMEI:493005100592800";
/// The Get the engine sends to read a device's inventory.
const LISTING: &str = ".?list=TNDS+ACL+Format+Type+Value+Title";

/// The TNDS listing a simulated device returns for [`LISTING`].
fn tnds_listing() -> String {
    let dev = SimDevice::new(
        DEV_ID,
        &SimAccount {
            server_id: SERVER_ID.into(),
            server_url: SERVER_URL.into(),
            scheme: AuthScheme::Md5,
            client: ("dev".into(), "c1".into()),
            server: (SERVER_ID.into(), "s1".into()),
        },
    )
    .expect("simulated device");
    let target = Target::parse(LISTING).expect("listing target");
    let Some(Query::List(ListKind::Tnds(sel))) = target.query else {
        panic!("a TNDS listing")
    };
    dev.tree
        .export_tnds(
            Principal::Server(SERVER_ID),
            &target.uri,
            &NodeUri::root(),
            &sel,
        )
        .expect("export")
        .to_xml()
}

fn cred(ty: &str, data: &str) -> Cred {
    Cred {
        meta: Meta::format_type("b64", ty),
        data: data.into(),
    }
}

/// A device's Package 3 answering the listing Get, the listing carried as `data`.
fn device_pkg3(data: Data) -> SyncMl {
    SyncMl {
        hdr: SyncHdr {
            session_id: "1A2B".into(),
            msg_id: 2,
            target: LocRef::new(SERVER_URL),
            source: LocRef {
                loc_uri: DEV_ID.into(),
                loc_name: Some("dev".into()),
            },
            cred: Some(cred("syncml:auth-md5", "Zz6EivR3yeaaENcRN6lpAQ==")),
            meta: Some(Meta {
                max_msg_size: Some(65536),
                max_obj_size: Some(1 << 20),
                ..Meta::default()
            }),
            ..SyncHdr::default()
        },
        body: SyncBody {
            commands: vec![
                Command::Status(Status {
                    target_refs: vec![DEV_ID.into()],
                    source_refs: vec![SERVER_URL.into()],
                    ..Status::new(1, 1, 0, "SyncHdr", StatusCode::OK)
                }),
                Command::Status(Status {
                    target_refs: vec![LISTING.into()],
                    ..Status::new(2, 1, 3, "Get", StatusCode::OK)
                }),
                Command::Results(Results {
                    cmd_id: 3,
                    msg_ref: Some(1),
                    cmd_ref: 3,
                    items: vec![Item {
                        source: Some(LocRef::new(LISTING)),
                        meta: Some(Meta::format_type(
                            "xml",
                            "application/vnd.syncml.dmtnds+xml",
                        )),
                        data: Some(data),
                        ..Item::default()
                    }],
                    ..Results::default()
                }),
            ],
            is_final: true,
        },
    }
}

/// Ten Add/Replace commands of leaf values (CmdIDs from 10).
fn small_commands() -> Vec<Command> {
    (0..10u32)
        .map(|i| {
            let item = Item {
                target: Some(LocRef::new(format!("./Vendor/Enterprise/App{i}/Setting"))),
                meta: Some(Meta::format_type("chr", "text/plain")),
                data: Some(Data::Text(format!("value {i} & more <text>"))),
                ..Item::default()
            };
            let cmd = ItemCmd {
                cmd_id: 10 + i,
                items: vec![item],
                ..ItemCmd::default()
            };
            if i % 2 == 0 {
                Command::Add(cmd)
            } else {
                Command::Replace(cmd)
            }
        })
        .collect()
}

/// A server's Package 2: header status with a fresh nonce, the status of the device's Alert,
/// the listing Get and two Replaces.
fn server_pkg2() -> SyncMl {
    let mut commands = vec![
        Command::Status(Status {
            target_refs: vec![SERVER_URL.into()],
            source_refs: vec![DEV_ID.into()],
            chal: Some(Chal {
                meta: Meta {
                    next_nonce: Some("bm9uY2UxMjM0NTY3OA==".into()),
                    ..Meta::format_type("b64", "syncml:auth-md5")
                },
            }),
            ..Status::new(1, 1, 0, "SyncHdr", StatusCode::OK)
        }),
        Command::Status(Status::new(2, 1, 1, "Alert", StatusCode::OK)),
        Command::Get(ItemCmd {
            cmd_id: 3,
            items: vec![Item::with_target(LISTING)],
            ..ItemCmd::default()
        }),
    ];
    commands.extend(small_commands().into_iter().take(2));
    SyncMl {
        hdr: SyncHdr {
            session_id: "1A2B".into(),
            msg_id: 1,
            target: LocRef::new(DEV_ID),
            source: LocRef::new(SERVER_URL),
            cred: Some(cred("syncml:auth-md5", "c2VydmVyZGlnZXN0MTIzNA==")),
            meta: Some(Meta {
                max_msg_size: Some(65536),
                ..Meta::default()
            }),
            ..SyncHdr::default()
        },
        body: SyncBody {
            commands,
            is_final: true,
        },
    }
}

fn codec(c: &mut Criterion) {
    let listing = tnds_listing();
    let inline = device_pkg3(Data::Xml(listing.clone()));
    let cdata = device_pkg3(Data::Text(listing.clone()));
    let pkg2 = server_pkg2();
    let cases = [
        ("pkg3_inline_xml", &inline),
        ("pkg3_cdata", &cdata),
        ("pkg2_small", &pkg2),
    ];
    let nodes = listing.matches("<Node>").count();
    eprintln!("TNDS listing: {nodes} nodes, {} bytes", listing.len());

    let mut g = c.benchmark_group("syncml_xml_decode");
    for (name, msg) in cases {
        let bytes = xml::encode(msg);
        assert_eq!(xml::decode(&bytes).as_ref(), Ok(msg), "{name} round trip");
        eprintln!("{name}: {} bytes", bytes.len());
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| b.iter(|| xml::decode(black_box(&bytes))));
    }
    g.finish();

    let mut g = c.benchmark_group("syncml_xml_encode");
    for (name, msg) in cases {
        g.throughput(Throughput::Bytes(xml::encode(msg).len() as u64));
        g.bench_function(name, |b| b.iter(|| xml::encode(black_box(msg))));
    }
    g.finish();
}

fn fill(c: &mut Criterion) {
    let listing = tnds_listing();
    let mut queue: VecDeque<Outgoing<u32>> = small_commands()
        .into_iter()
        .map(|command| Outgoing {
            tag: command.cmd_id(),
            command,
            continuation: false,
        })
        .collect();
    let Some(Command::Results(results)) = device_pkg3(Data::Xml(listing)).body.commands.pop()
    else {
        panic!("Results")
    };
    queue.push_back(Outgoing {
        command: Command::Results(Results {
            cmd_id: 20,
            ..results
        }),
        tag: 20,
        continuation: false,
    });
    let mut msg = device_pkg3(Data::Text(String::new()));
    msg.body.commands.truncate(2);
    msg.body.is_final = false;

    let mut g = c.benchmark_group("syncml_packer_fill");
    for (name, max) in [("all_fit_64k", 65536), ("chunked_8k", 8192)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || (msg.clone(), queue.clone(), 100u32),
                |(mut msg, mut queue, mut next)| {
                    let placed = packer::fill(&mut msg, &mut queue, max, &mut next);
                    (msg, queue, placed)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = codec, fill
}
criterion_main!(benches);
