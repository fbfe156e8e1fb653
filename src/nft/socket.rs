//! The `NETLINK_NETFILTER` socket: one transaction out, the kernel's answers back.
//!
//! nfnetlink handles a batch inside the `send` that carries it, so once `send` returns every
//! answer is already queued on the socket: it is read without blocking, and "nothing more to
//! read" ends the exchange (a kernel that never answers cannot hang podagent).

use super::error::NftError;
use super::wire::{self, Message, Reply};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io;
use std::os::fd::AsRawFd;

/// Above this, a transaction asks for a send buffer of its size (the default is about 200 KiB
/// and a batch must go in one `send`).
const DEFAULT_SNDBUF: usize = 128 * 1024;

/// A message the kernel answered with: its type and attributes.
pub type Answer = (u16, Vec<u8>);

pub struct NfSocket {
    socket: Socket,
    seq: u32,
}

impl NfSocket {
    /// A socket in the calling thread's network namespace; it stays bound to that namespace
    /// whichever thread uses it later.
    pub fn open() -> io::Result<NfSocket> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_non_blocking(true)?;
        // Errors come back with the failed message's header only, not its (maybe large) body.
        socket.set_cap_ack(true)?;
        Ok(NfSocket { socket, seq: 0 })
    }

    /// Sends `messages` as one transaction: all applied, or (on the first message the kernel
    /// refuses) none.
    pub fn transact(&mut self, messages: &[Message]) -> Result<(), NftError> {
        if messages.is_empty() {
            return Ok(());
        }
        if self.seq > u32::MAX / 2 {
            self.seq = 0;
        }
        let begin = self.seq + 1;
        let last = begin + messages.len() as u32;
        self.seq = last + 1;
        let bytes = wire::batch(messages, begin);
        self.send(&bytes)?;
        let mut acked = false;
        let mut refused: Option<(u32, i32)> = None;
        for reply in self.drain()? {
            let Reply::Ack { seq, errno } = reply else { continue };
            if !(begin..=last).contains(&seq) {
                continue;
            }
            if errno != 0 && refused.is_none_or(|(s, _)| seq < s) {
                refused = Some((seq, errno));
            }
            acked |= seq == last;
        }
        match refused {
            Some((seq, errno)) => {
                let index = (seq - begin) as usize;
                let what = if index == 0 { "begin transaction".to_string() } else { messages[index - 1].what.clone() };
                Err(NftError::Refused { what, index, errno })
            }
            None if acked => Ok(()),
            None => Err(NftError::Protocol(format!(
                "no answer to the transaction ending with \"{}\"",
                messages[messages.len() - 1].what
            ))),
        }
    }

    /// Sends one request; its answer messages, or the errno the kernel answered with.
    pub fn request(&mut self, message: &Message) -> Result<Result<Vec<Answer>, i32>, NftError> {
        if self.seq > u32::MAX / 2 {
            self.seq = 0;
        }
        self.seq += 1;
        let seq = self.seq;
        let mut m = message.clone();
        m.flags |= wire::NLM_F_ACK;
        self.send(&wire::request(&m, seq))?;
        let mut out = Vec::new();
        let mut answered = false;
        for reply in self.drain()? {
            match reply {
                Reply::Message { kind, seq: s, attrs } if s == seq => out.push((kind, attrs)),
                Reply::Ack { seq: s, errno } if s == seq => {
                    if errno != 0 {
                        return Ok(Err(errno));
                    }
                    answered = true;
                }
                _ => {}
            }
        }
        if !answered {
            return Err(NftError::Protocol(format!("no answer to \"{}\"", message.what)));
        }
        Ok(Ok(out))
    }

    /// Sends one dump request; every message of the answer, or the errno the kernel answered
    /// with. The kernel fills the socket again as it is read, until `NLMSG_DONE`.
    pub fn dump(&mut self, message: &Message) -> Result<Result<Vec<Answer>, i32>, NftError> {
        if self.seq > u32::MAX / 2 {
            self.seq = 0;
        }
        self.seq += 1;
        let seq = self.seq;
        let mut m = message.clone();
        m.flags |= wire::NLM_F_DUMP;
        self.send(&wire::request(&m, seq))?;
        let mut out = Vec::new();
        loop {
            let replies = self.drain()?;
            if replies.is_empty() {
                return Err(NftError::Protocol(format!("no end to \"{}\"", message.what)));
            }
            for reply in replies {
                match reply {
                    Reply::Message { kind, seq: s, attrs } if s == seq => out.push((kind, attrs)),
                    Reply::Ack { seq: s, errno } if s == seq && errno != 0 => return Ok(Err(errno)),
                    Reply::Done { seq: s } if s == seq => return Ok(Ok(out)),
                    _ => {}
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NftError> {
        if bytes.len() > DEFAULT_SNDBUF {
            let size = (bytes.len() + 64 * 1024) as libc::c_int;
            // SAFETY: setsockopt with a valid fd and a c_int of the given length.
            let rc = unsafe {
                libc::setsockopt(
                    self.socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUFFORCE,
                    &size as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(NftError::Socket(io::Error::last_os_error()));
            }
        }
        let sent = self.socket.send(bytes, 0).map_err(NftError::Socket)?;
        if sent != bytes.len() {
            return Err(NftError::Protocol(format!("sent {sent} of {} bytes", bytes.len())));
        }
        Ok(())
    }

    /// Everything queued on the socket.
    fn drain(&self) -> Result<Vec<Reply>, NftError> {
        let mut out = Vec::new();
        loop {
            match self.socket.recv_from_full() {
                Ok((data, _)) => out.extend(wire::parse_replies(&data).map_err(NftError::Protocol)?),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NftError::Socket(e)),
            }
        }
    }
}
