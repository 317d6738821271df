//! The split rule for a whole connection: the same bytes sent in one piece and sent in
//! fuzzer-chosen pieces (each piece a readable event, as the loop brings them) get the
//! same responses, byte for byte, and the same close reason once the client's EOF has
//! arrived. `100 Continue` is left out of the comparison: it goes out, by design, only
//! when a body has not arrived with its head (RFC 9110 §10.1.1).
//!
//! Input layout: byte 0 the configuration (limits and timeouts, as in `harness::Lent`),
//! byte 1 how the pieces are cut (0: one byte at a time; otherwise the seed of up to 16
//! random cuts), the rest is what the client sends. The client reads everything at once
//! and no time passes, so no timer fires: what is compared is the bytes alone.

#![no_main]

use lastcall::conn::{CloseReason, Conn, ConnId};
use lastcall::http::response::CONTINUE;
use lastcall_fuzz::harness::{Fake, Lent, resume_yielded};
use lastcall_fuzz::split::{Rng, cut_points};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [config, cut_seed, sent @ ..] = input else {
        return;
    };
    let cuts: Vec<usize> = match cut_seed {
        0 => (1..sent.len()).collect(),
        seed => {
            let mut rng = Rng::new(u64::from(*seed) << 32 | sent.len() as u64);
            cut_points(&mut rng, sent.len(), 1 + usize::from(seed % 16))
        }
    };
    let whole = serve(*config, sent, &[]);
    let pieces = serve(*config, sent, &cuts);
    assert!(
        whole == pieces,
        "sent {:?} cut at {cuts:?}\nwhole:  {:?}\npieces: {:?}",
        String::from_utf8_lossy(sent),
        lossy(&whole),
        lossy(&pieces),
    );
});

/// What one connection writes (interim responses left out) and why it closes, for `sent`
/// arriving in pieces cut at `cuts` and then the client's EOF. `None`: still open.
fn serve(config: u8, sent: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<CloseReason>) {
    let mut lent = Lent::new(config);
    let socket = Fake {
        room: usize::MAX,
        ..Fake::default()
    };
    let mut conn = Conn::new(socket, lent.now, ConnId(1), None);
    let mut from = 0;
    let mut closed = None;
    for end in cuts.iter().copied().chain([sent.len()]) {
        let end = end.clamp(from, sent.len());
        conn.socket_mut().unread.extend(&sent[from..end]);
        from = end;
        let result = conn.ready(&mut lent.cx(), true, false);
        if let Err(reason) = result.and_then(|()| resume_yielded(&mut lent, &mut conn)) {
            closed = Some(reason);
            break;
        }
    }
    if closed.is_none() {
        conn.socket_mut().eof = true;
        let result = conn.ready(&mut lent.cx(), true, true);
        closed = result
            .and_then(|()| resume_yielded(&mut lent, &mut conn))
            .err();
    }
    conn.release(&mut lent.bufs);
    (without_interim(&conn.socket_mut().written), closed)
}

/// `written` without its `100 Continue` responses. (A body echoed back that holds the
/// same bytes loses them too, in both runs alike, so the comparison stays fair.)
fn without_interim(written: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(written.len());
    let mut rest = written;
    // Each pass takes at least one byte off `rest`.
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(CONTINUE) {
            rest = after;
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

fn lossy((written, closed): &(Vec<u8>, Option<CloseReason>)) -> String {
    format!("{closed:?} {}", String::from_utf8_lossy(written))
}
