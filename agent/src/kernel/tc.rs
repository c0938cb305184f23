//! Qdiscs and classes through rtnetlink. Nothing here runs `tc`.

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::{
    Handle,
    packet_core::{
        DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage,
        NetlinkPayload,
    },
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcHandle, TcMessage},
    },
};

const TCA_OPTIONS: u16 = 2;
pub const TC_H_ROOT: u32 = 0xFFFF_FFFF;
pub const TC_H_CLSACT: u32 = 0xFFFF_FFF1;

#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct TcError {
    pub op: String,
    pub source: std::io::Error,
}

impl TcError {
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
}

#[must_use]
pub fn fmt_handle(h: u32) -> String {
    if h == TC_H_ROOT {
        return "root".into();
    }
    format!("{:x}:{:x}", h >> 16, h & 0xffff)
}

fn to_io(e: rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => std::io::Error::other(other.to_string()),
    }
}

async fn send(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
    op: String,
) -> Result<(), TcError> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut resp =
        handle.clone().request(req).map_err(|e| TcError { op: op.clone(), source: to_io(e) })?;
    while let Some(m) = resp.next().await {
        if let NetlinkPayload::Error(err) = m.payload
            && err.code.is_some()
        {
            return Err(TcError { op, source: err.to_io() });
        }
    }
    Ok(())
}

fn message(
    ifindex: u32,
    parent: u32,
    handle: u32,
    kind: Option<&str>,
    options: Option<Vec<u8>>,
) -> TcMessage {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = TcHandle::from(parent);
    m.header.handle = TcHandle::from(handle);
    if let Some(kind) = kind {
        m.attributes.push(TcAttribute::Kind(kind.to_owned()));
    }
    if let Some(options) = options {
        m.attributes.push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)));
    }
    m
}

/// Adds a qdisc; fails rather than replaces when one is already there.
pub async fn add_qdisc(nl: &Handle, q: &Qdisc, options: Vec<u8>) -> Result<(), TcError> {
    let op = format!(
        "add {} qdisc {} parent {} on ifindex {}",
        q.kind,
        fmt_handle(q.handle),
        fmt_handle(q.parent),
        q.ifindex
    );
    let m = message(q.ifindex, q.parent, q.handle, Some(&q.kind), Some(options));
    send(nl, RouteNetlinkMessage::NewQueueDiscipline(m), NLM_F_CREATE | NLM_F_EXCL, op).await
}

pub async fn del_qdisc(nl: &Handle, q: &Qdisc) -> Result<(), TcError> {
    let op = format!("delete {} qdisc {} on ifindex {}", q.kind, fmt_handle(q.handle), q.ifindex);
    let m = message(q.ifindex, q.parent, q.handle, Some(&q.kind), None);
    send(nl, RouteNetlinkMessage::DelQueueDiscipline(m), 0, op).await
}

pub async fn add_class(
    nl: &Handle,
    ifindex: u32,
    parent: u32,
    classid: u32,
    kind: &str,
    options: Vec<u8>,
) -> Result<(), TcError> {
    let op = format!("add {kind} class {} on ifindex {ifindex}", fmt_handle(classid));
    let m = message(ifindex, parent, classid, Some(kind), Some(options));
    send(nl, RouteNetlinkMessage::NewTrafficClass(m), NLM_F_CREATE | NLM_F_EXCL, op).await
}

/// Every qdisc of one interface, as the kernel reports them.
pub async fn list_qdiscs(nl: &Handle, ifindex: u32) -> Result<Vec<Qdisc>, TcError> {
    let op = format!("list qdiscs of ifindex {ifindex}");
    let msgs: Vec<TcMessage> = nl
        .qdisc()
        .get()
        .index(ifindex as i32)
        .execute()
        .try_collect()
        .await
        .map_err(|e| TcError { op, source: to_io(e) })?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.index as u32 == ifindex)
        .map(|m| Qdisc {
            ifindex,
            handle: m.header.handle.into(),
            parent: m.header.parent.into(),
            kind: m
                .attributes
                .iter()
                .find_map(|a| if let TcAttribute::Kind(k) = a { Some(k.clone()) } else { None })
                .unwrap_or_default(),
        })
        .collect())
}

/// What a class passed and held back since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub overlimits: u64,
}

/// The counters of class `classid` on an interface, if it exists.
pub async fn class_stats(
    nl: &Handle,
    ifindex: u32,
    classid: u32,
) -> Result<Option<ClassStats>, TcError> {
    use rtnetlink::packet_route::tc::TcStats2;
    let op = format!("list classes of ifindex {ifindex}");
    let msgs: Vec<TcMessage> = nl
        .traffic_class(ifindex as i32)
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| TcError { op, source: to_io(e) })?;
    Ok(msgs.into_iter().find(|m| u32::from(m.header.handle) == classid).map(|m| {
        let mut out = ClassStats::default();
        for a in &m.attributes {
            if let TcAttribute::Stats2(stats) = a {
                for st in stats {
                    match st {
                        TcStats2::Basic(b) => {
                            out.bytes = b.bytes;
                            out.packets = u64::from(b.packets);
                        }
                        TcStats2::Queue(q) => {
                            out.drops = u64::from(q.drops);
                            out.overlimits = u64::from(q.overlimits);
                        }
                        _ => {}
                    }
                }
            }
        }
        out
    }))
}

/// The root qdisc of an interface, if the kernel reports one.
pub async fn root_qdisc(nl: &Handle, ifindex: u32) -> Result<Option<Qdisc>, TcError> {
    Ok(list_qdiscs(nl, ifindex).await?.into_iter().find(|q| q.parent == TC_H_ROOT))
}
