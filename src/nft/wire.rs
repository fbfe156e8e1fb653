//! The nf_tables netlink wire format (`linux/netfilter/nf_tables.h`, `nfnetlink.h`): netlink
//! attributes, the messages of a batch and the kernel expressions kactus uses. Only bytes
//! here: what a table means is in `table.rs`, how it becomes expressions in `compile.rs`.
//!
//! Encoded by hand on a byte writer rather than through `netlink-packet-netfilter`: most of the
//! expressions needed (ct, numgen, nat, reject, range) are not typed there and would be raw
//! attributes anyway, and this ABI is fixed by the kernel.

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NLA_F_NESTED: u16 = 0x8000;
/// A netlink attribute's length field is 16 bits: nested lists are split below this.
pub const MAX_NESTED: usize = 60_000;

/// `NFT_MSG_*`: what a message asks of nf_tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    GetChain = 4,
    DelChain = 5,
    NewRule = 6,
    DelRule = 8,
    NewSet = 9,
    GetSet = 10,
    DelSet = 11,
    NewSetElem = 12,
    DelSetElem = 14,
    NewGen = 15,
    GetGen = 16,
}

impl Op {
    /// The netlink message type: subsystem in the high byte.
    pub fn message_type(self) -> u16 {
        (NFNL_SUBSYS_NFTABLES << 8) | self as u16
    }
}

/// `NFPROTO_*` of a table.
pub mod nfproto {
    pub const UNSPEC: u8 = 0;
    pub const INET: u8 = 1;
    pub const IPV4: u8 = 2;
    pub const IPV6: u8 = 10;
}

/// Attribute numbers, one module per attribute space.
pub mod attr {
    pub mod table {
        pub const NAME: u16 = 1;
    }
    pub mod chain {
        pub const TABLE: u16 = 1;
        pub const NAME: u16 = 3;
        pub const HOOK: u16 = 4;
        pub const POLICY: u16 = 5;
        pub const TYPE: u16 = 7;
    }
    pub mod hook {
        pub const HOOKNUM: u16 = 1;
        pub const PRIORITY: u16 = 2;
    }
    pub mod rule {
        pub const TABLE: u16 = 1;
        pub const CHAIN: u16 = 2;
        pub const EXPRESSIONS: u16 = 4;
    }
    pub mod set {
        pub const TABLE: u16 = 1;
        pub const NAME: u16 = 2;
        pub const FLAGS: u16 = 3;
        pub const KEY_TYPE: u16 = 4;
        pub const KEY_LEN: u16 = 5;
        pub const DATA_TYPE: u16 = 6;
        pub const ID: u16 = 10;
        pub const USERDATA: u16 = 13;
    }
    pub mod elems {
        pub const TABLE: u16 = 1;
        pub const SET: u16 = 2;
        pub const ELEMENTS: u16 = 3;
    }
    pub mod elem {
        pub const KEY: u16 = 1;
        pub const DATA: u16 = 2;
        pub const FLAGS: u16 = 3;
    }
    pub mod gen {
        pub const ID: u16 = 1;
    }
    pub const LIST_ELEM: u16 = 1;
    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;
    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
}

/// Set flags (`NFT_SET_*`).
pub const SET_INTERVAL: u32 = 0x4;
pub const SET_MAP: u32 = 0x8;
/// `NFT_DATA_VERDICT`: a map's data type when it maps to verdicts.
pub const DATA_VERDICT: u32 = 0xffff_ff00;
/// `NFT_SET_ELEM_INTERVAL_END`.
pub const ELEM_INTERVAL_END: u32 = 0x1;
/// `NFTNL_UDATA_SET_KEYBYTEORDER` with `BYTEORDER_HOST_ENDIAN`: tells `nft list` that a
/// set's keys are in host order (numgen's numbers, device names), so it prints them right.
pub fn host_order_keys_userdata() -> Vec<u8> {
    let mut out = vec![0, 4];
    out.extend_from_slice(&1u32.to_ne_bytes());
    out
}

/// Netlink attributes being written: type-length-value, each padded to 4 bytes.
#[derive(Debug, Default, Clone)]
pub struct Attrs(Vec<u8>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs(Vec::new())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn put(&mut self, kind: u16, value: &[u8]) -> &mut Attrs {
        let len = 4 + value.len();
        // Lengths above 16 bits cannot be expressed; callers split lists below MAX_NESTED.
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    /// A big-endian u32, as nf_tables wants its numbers.
    pub fn be32(&mut self, kind: u16, value: u32) -> &mut Attrs {
        self.put(kind, &value.to_be_bytes())
    }

    /// A NUL-terminated string.
    pub fn string(&mut self, kind: u16, value: &str) -> &mut Attrs {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.put(kind, &bytes)
    }

    pub fn nested(&mut self, kind: u16, inner: &Attrs) -> &mut Attrs {
        self.put(kind | NLA_F_NESTED, &inner.0)
    }

    /// `NFTA_DATA_VALUE` inside a nested attribute `kind`: how nf_tables carries raw data.
    pub fn data(&mut self, kind: u16, value: &[u8]) -> &mut Attrs {
        let mut inner = Attrs::new();
        inner.put(attr::DATA_VALUE, value);
        self.nested(kind, &inner)
    }

    /// `NFTA_DATA_VERDICT` inside a nested attribute `kind`.
    pub fn verdict(&mut self, kind: u16, verdict: &Verdict) -> &mut Attrs {
        let mut code = Attrs::new();
        code.be32(attr::VERDICT_CODE, verdict.code() as u32);
        if let Some(chain) = verdict.chain() {
            code.string(attr::VERDICT_CHAIN, chain);
        }
        let mut data = Attrs::new();
        data.nested(attr::DATA_VERDICT, &code);
        self.nested(kind, &data)
    }
}

/// A rule's or a map element's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    /// `NF_ACCEPT`, `NF_DROP`, `NFT_RETURN`, `NFT_JUMP`, `NFT_GOTO`.
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }

    fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// Registers: the verdict register and the 32-bit data registers (`NFT_REG32_00` is 8; four
/// of them make one of the old 16-byte registers).
pub const REG_VERDICT: u32 = 0;
pub const REG32_00: u32 = 8;

/// `NFT_PAYLOAD_*_HEADER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Network = 1,
    Transport = 2,
}

/// The kernel expressions kactus emits, with their registers already chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        base: Base,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `NFT_META_*` key into `dreg`.
    Meta {
        key: u32,
        dreg: u32,
    },
    /// `NFT_CT_*` key (original direction unset) into `dreg`.
    Ct {
        key: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `from <= sreg <= to` (big-endian comparison, as payloads are).
    Range {
        sreg: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Set membership; with `dreg`, a map lookup into that register.
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Verdict(Verdict),
    /// `numgen random mod modulus` into `dreg`.
    NumgenRandom {
        dreg: u32,
        modulus: u32,
    },
    /// Destination NAT for `family` (`NFPROTO_IPV4`/`IPV6`) to the address in `addr` and,
    /// if given, the port in `port`.
    Dnat {
        family: u8,
        addr: u32,
        port: Option<u32>,
    },
    /// Reject: ICMP(v6) port unreachable for `ip`/`ip6` tables, its "icmpx" form for `inet`.
    Reject {
        family: u8,
    },
    Counter,
}

/// `NFT_CMP_EQ`, `NFT_CMP_NEQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// `NFT_META_*` keys.
pub mod meta {
    pub const NFPROTO: u32 = 15;
    pub const L4PROTO: u32 = 16;
    pub const IIFNAME: u32 = 6;
    pub const OIFNAME: u32 = 7;
}

/// `NFT_CT_STATE` and the state bits (`NF_CT_STATE_BIT`).
pub const CT_STATE: u32 = 0;
pub const CT_STATE_INVALID: u32 = 1;
pub const CT_STATE_ESTABLISHED: u32 = 1 << 1;
pub const CT_STATE_RELATED: u32 = 1 << 2;
pub const CT_STATE_NEW: u32 = 1 << 3;

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } => "meta",
            Expr::Ct { .. } => "ct",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Range { .. } => "range",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::Dnat { .. } => "nat",
            Expr::Reject { .. } => "reject",
            Expr::Counter => "counter",
        }
    }

    /// The expression's `NFTA_EXPR_DATA` attributes.
    fn data(&self) -> Attrs {
        let mut a = Attrs::new();
        match self {
            // NFTA_PAYLOAD_DREG 1, BASE 2, OFFSET 3, LEN 4.
            Expr::Payload { base, offset, len, dreg } => {
                a.be32(1, *dreg).be32(2, *base as u32).be32(3, *offset).be32(4, *len);
            }
            // NFTA_META_DREG 1, KEY 2.
            Expr::Meta { key, dreg } => {
                a.be32(2, *key).be32(1, *dreg);
            }
            // NFTA_CT_DREG 1, KEY 2.
            Expr::Ct { key, dreg } => {
                a.be32(1, *dreg).be32(2, *key);
            }
            // NFTA_CMP_SREG 1, OP 2, DATA 3.
            Expr::Cmp { sreg, op, data } => {
                a.be32(1, *sreg).be32(2, *op as u32).data(3, data);
            }
            // NFTA_BITWISE_SREG 1, DREG 2, LEN 3, MASK 4, XOR 5.
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                a.be32(1, *sreg).be32(2, *dreg).be32(3, mask.len() as u32).data(4, mask).data(5, xor);
            }
            // NFTA_RANGE_SREG 1, OP 2 (NFT_RANGE_EQ 0), FROM_DATA 3, TO_DATA 4.
            Expr::Range { sreg, from, to } => {
                a.be32(1, *sreg).be32(2, 0).data(3, from).data(4, to);
            }
            // NFTA_LOOKUP_SET 1, SREG 2, DREG 3, FLAGS 5 (NFT_LOOKUP_F_INV 1).
            Expr::Lookup { set, sreg, dreg, invert } => {
                a.string(1, set).be32(2, *sreg);
                if let Some(dreg) = dreg {
                    a.be32(3, *dreg);
                }
                if *invert {
                    a.be32(5, 1);
                }
            }
            // NFTA_IMMEDIATE_DREG 1, DATA 2.
            Expr::Immediate { dreg, data } => {
                a.be32(1, *dreg).data(2, data);
            }
            Expr::Verdict(v) => {
                a.be32(1, REG_VERDICT).verdict(2, v);
            }
            // NFTA_NG_DREG 1, MODULUS 2, TYPE 3 (NFT_NG_RANDOM 1), OFFSET 4.
            Expr::NumgenRandom { dreg, modulus } => {
                a.be32(1, *dreg).be32(2, *modulus).be32(3, 1).be32(4, 0);
            }
            // NFTA_NAT_TYPE 1 (NFT_NAT_DNAT 1), FAMILY 2, REG_ADDR_MIN 3, REG_PROTO_MIN 5.
            Expr::Dnat { family, addr, port } => {
                a.be32(1, 1).be32(2, *family as u32).be32(3, *addr);
                if let Some(port) = port {
                    a.be32(5, *port);
                }
            }
            // NFTA_REJECT_TYPE 1, ICMP_CODE 2: NFT_REJECT_ICMPX_UNREACH 2 with
            // NFT_REJECT_ICMPX_PORT_UNREACH 1 in inet tables; NFT_REJECT_ICMP_UNREACH 0 with
            // ICMP_PORT_UNREACH 3 / ICMPV6_PORT_UNREACH 4 in ip / ip6 ones.
            Expr::Reject { family } => {
                let (kind, code) = match *family {
                    nfproto::IPV4 => (0, 3),
                    nfproto::IPV6 => (0, 4),
                    _ => (2, 1),
                };
                a.be32(1, kind).put(2, &[code]);
            }
            // NFTA_COUNTER_BYTES 1, PACKETS 2: start from zero.
            Expr::Counter => {
                a.put(1, &0u64.to_be_bytes()).put(2, &0u64.to_be_bytes());
            }
        }
        a
    }
}

/// `NFTA_RULE_EXPRESSIONS`' content: one list element per expression.
pub fn expressions(exprs: &[Expr]) -> Attrs {
    let mut list = Attrs::new();
    for e in exprs {
        let mut one = Attrs::new();
        one.string(attr::EXPR_NAME, e.name()).nested(attr::EXPR_DATA, &e.data());
        list.nested(attr::LIST_ELEM, &one);
    }
    list
}

/// One message of a batch, with what it does in words (for errors).
#[derive(Debug, Clone)]
pub struct Message {
    pub op: Op,
    /// `NLM_F_*` beyond `NLM_F_REQUEST`.
    pub flags: u16,
    pub family: u8,
    pub attrs: Attrs,
    pub what: String,
}

const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_ROOT | NLM_F_MATCH`: every object (of the table named in the request).
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
const NLMSG_HDRLEN: usize = 16;

/// Appends one netlink message: `nlmsghdr`, `nfgenmsg` (family, version 0, `res_id`), body.
fn push(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, body: &[u8]) {
    let len = NLMSG_HDRLEN + 4 + body.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(body);
}

/// One request outside a batch (a get), with sequence number `seq`.
pub fn request(msg: &Message, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    push(&mut out, msg.op.message_type(), msg.flags, seq, msg.family, 0, msg.attrs.bytes());
    out
}

/// A transaction: `BATCH_BEGIN`, the messages numbered `first_seq + 1 ..`, `BATCH_END`.
/// Only the last message asks for an ACK: errors come back whatever the flags, so that
/// one ACK (or its error) tells that the kernel has answered the whole batch.
pub fn batch(messages: &[Message], first_seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    push(&mut out, NFNL_MSG_BATCH_BEGIN, 0, first_seq, nfproto::UNSPEC, NFNL_SUBSYS_NFTABLES, &[]);
    let last = messages.len().saturating_sub(1);
    for (i, m) in messages.iter().enumerate() {
        let ack = if i == last { NLM_F_ACK } else { 0 };
        let seq = first_seq + 1 + i as u32;
        push(&mut out, m.op.message_type(), m.flags | ack, seq, m.family, 0, m.attrs.bytes());
    }
    let end = first_seq + 1 + messages.len() as u32;
    push(&mut out, NFNL_MSG_BATCH_END, 0, end, nfproto::UNSPEC, NFNL_SUBSYS_NFTABLES, &[]);
    out
}

/// One answer from the kernel, as far as kactus reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `NLMSG_ERROR`: `errno` 0 is an ACK; `seq` is the sequence number it answers.
    Ack {
        seq: u32,
        errno: i32,
    },
    Done {
        seq: u32,
    },
    /// Any other message: its type, sequence number and attributes (after `nfgenmsg`).
    Message {
        kind: u16,
        seq: u32,
        attrs: Vec<u8>,
    },
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Splits a datagram from the kernel into replies.
pub fn parse_replies(mut data: &[u8]) -> Result<Vec<Reply>, String> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(format!("netlink message of length {len} in {} bytes", data.len()));
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
        let body = &data[NLMSG_HDRLEN..len];
        out.push(match kind {
            NLMSG_ERROR => {
                let Some(code) = body.get(..4) else { return Err("short netlink error message".into()) };
                // The error's own header carries our sequence number back.
                let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                Reply::Ack { seq, errno }
            }
            NLMSG_DONE => Reply::Done { seq },
            _ => Reply::Message { kind, seq, attrs: body.get(4..).unwrap_or_default().to_vec() },
        });
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    Ok(out)
}

/// The value of attribute `kind` among `attrs`, if present.
pub fn find_attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let k = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if k == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes_and_strings_end_in_nul() {
        let mut a = Attrs::new();
        a.string(1, "kactus").be32(2, 0x0102_0304);
        assert_eq!(
            a.bytes(),
            [
                11, 0, 1, 0, b'k', b'a', b'c', b't', b'u', b's', 0, 0, // 4 + 7, padded to 12
                8, 0, 2, 0, 1, 2, 3, 4,
            ]
        );
    }

    #[test]
    fn a_jump_verdict_nests_code_and_chain_under_the_verdict_data() {
        let mut a = Attrs::new();
        a.verdict(2, &Verdict::Jump("x".into()));
        let code_and_chain = [8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfd, 6, 0, 2, 0, b'x', 0, 0, 0];
        let mut verdict = vec![20, 0, 2, 0x80];
        verdict.extend_from_slice(&code_and_chain);
        let mut expected = vec![24, 0, 2, 0x80];
        expected.extend_from_slice(&verdict);
        assert_eq!(a.bytes(), expected.as_slice());
    }

    #[test]
    fn an_expression_is_a_list_element_with_its_name_and_data() {
        let list = expressions(&[Expr::Meta { key: meta::L4PROTO, dreg: 8 }]);
        #[rustfmt::skip]
        let expected = [
            36, 0, 1, 0x80,                      // list element
            9, 0, 1, 0, b'm', b'e', b't', b'a', 0, 0, 0, 0,
            20, 0, 2, 0x80,                      // data
            8, 0, 2, 0, 0, 0, 0, 16,             // key l4proto
            8, 0, 1, 0, 0, 0, 0, 8,              // dreg REG32_00
        ];
        assert_eq!(list.bytes(), expected);
    }

    #[test]
    fn dnat_names_its_family_and_registers() {
        let data = Expr::Dnat { family: nfproto::IPV6, addr: 1, port: Some(2) }.data();
        #[rustfmt::skip]
        let expected = [
            8, 0, 1, 0, 0, 0, 0, 1,   // type dnat
            8, 0, 2, 0, 0, 0, 0, 10,  // family ipv6
            8, 0, 3, 0, 0, 0, 0, 1,   // addr register
            8, 0, 5, 0, 0, 0, 0, 2,   // proto register
        ];
        assert_eq!(data.bytes(), expected);
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end_and_only_its_last_message_asks_for_an_ack() {
        let mut attrs = Attrs::new();
        attrs.string(attr::table::NAME, "t");
        let m =
            |op| Message { op, flags: NLM_F_CREATE, family: nfproto::INET, attrs: attrs.clone(), what: String::new() };
        let bytes = batch(&[m(Op::NewTable), m(Op::DelTable)], 100);
        #[rustfmt::skip]
        let begin = [
            20, 0, 0, 0, 16, 0, 1, 0, 100, 0, 0, 0, 0, 0, 0, 0, // len, BATCH_BEGIN, REQUEST, seq 100
            0, 0, 0, 10,                                      // AF_UNSPEC, v0, res_id NFTABLES (be)
        ];
        assert_eq!(bytes[..20], begin);
        let first = &bytes[20..48];
        assert_eq!(u16::from_ne_bytes([first[4], first[5]]), 0x0a00, "NEWTABLE");
        assert_eq!(u16::from_ne_bytes([first[6], first[7]]), NLM_F_REQUEST | NLM_F_CREATE);
        assert_eq!(u32::from_ne_bytes([first[8], first[9], first[10], first[11]]), 101);
        let second = &bytes[48..76];
        assert_eq!(u16::from_ne_bytes([second[4], second[5]]), 0x0a02, "DELTABLE");
        assert_eq!(u16::from_ne_bytes([second[6], second[7]]), NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
        let end = &bytes[76..];
        assert_eq!(end.len(), 20);
        assert_eq!(u16::from_ne_bytes([end[4], end[5]]), 17, "BATCH_END");
        assert_eq!(u32::from_ne_bytes([end[8], end[9], end[10], end[11]]), 103);
    }

    #[test]
    fn an_error_reply_gives_the_errno_and_the_sequence_it_answers() {
        let mut msg = Vec::new();
        msg.extend_from_slice(&36u32.to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&7u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(-2i32).to_ne_bytes());
        msg.extend_from_slice(&[0; 16]);
        assert_eq!(parse_replies(&msg).unwrap(), vec![Reply::Ack { seq: 7, errno: 2 }]);
        assert!(parse_replies(&msg[..30]).is_err());
    }

    #[test]
    fn attributes_are_found_by_type() {
        let mut a = Attrs::new();
        a.string(1, "abc").be32(2, 5);
        assert_eq!(find_attr(a.bytes(), 2), Some(&[0, 0, 0, 5][..]));
        assert_eq!(find_attr(a.bytes(), 3), None);
    }
}
