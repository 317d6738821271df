//! The request body decoder: turns the bytes after a request head into body data, for a
//! `Content-Length` body or a `Transfer-Encoding: chunked` one (RFC 9112 §6.3, §7.1).
//!
//! **Lifecycle step.** The head parser has decided how the body is framed ([`Framing`],
//! RFC 9112 §6.3); the connection then feeds whatever bytes follow the head to
//! [`BodyDecoder::decode`] until it reports `done`, and hands the data ranges to the handler.
//! Whatever is left in the buffer after that belongs to the next (pipelined) request.
//!
//! **What it is not.** It does not parse the head or decide the framing, it does not pick
//! status codes (each [`BodyError`] says which one it leads to; the one error-to-status
//! function elsewhere decides), it keeps no trailer fields (they are checked and dropped),
//! and it has no deadline: a body that stops arriving is the connection's timer's problem
//! (408), not this module's.
//!
//! **Invariants.**
//! - Sans-IO: never touches sockets, never reads the clock, never logs (it runs once per
//!   framing byte; the connection logs the outcome, and `CloseReason` says why it closed).
//! - Never allocates and never copies: it returns *ranges* into the caller's buffer, and all
//!   its state is a few integers. A partial line is not buffered; the state machine
//!   remembers where inside the line it is and continues from the next byte.
//! - "Not enough bytes yet" is never an error (as in httparse): it is a [`Step`] that
//!   consumed everything it was given and is not `done`. Feeding the same bytes in any
//!   split gives the same data, the same total consumed and the same error.
//! - Never consumes a byte past the end of the body: the next request may already be in
//!   the buffer.
//! - Every partial has a byte cap: the body has `limit` (→ 413), a chunk-size line has
//!   [`MAX_CHUNK_LINE_BYTES`] and the trailer section [`MAX_TRAILER_BYTES`] (→ 400).
//! - `received() <= limit` at all times; a chunk that would break it is refused from its
//!   size line, before any of its data is read.
//! - No panics on peer input: no indexing past what was checked, checked arithmetic on
//!   peer-supplied sizes.
//!
//! **Strict framing, on purpose.** RFC 9112 §2.2 lets a recipient accept a bare LF as the
//! end of the start-line and field lines, and the head parser may. We do not extend that
//! leniency to chunked framing (size lines, the CRLF after data, trailer lines): two
//! parsers that disagree on where a chunk ends are the classic request-smuggling setup
//! (RFC 9112 §11.2), e.g. a proxy that reads `5\n` as a size line in front of a server that
//! does not. So every framing line must end in CRLF, a CR must always be followed by LF
//! (§2.2: a bare CR makes the element invalid), and anything the grammar does not allow is
//! an error, never "repaired".
//!
//! # The chunked state machine
//!
//! A `Length(n)` body is just `Length { remaining }` counting down to `Done`. A chunked body
//! walks these states, one line each (`Ext` and `Trailer` keep a sub-position, `ExtAt` and
//! `TrailerAt`, to check the grammar byte by byte):
//!
//! ```text
//!   Size     chunk-size hex digits          BWS or ";" -> Ext, CR -> SizeLf
//!   Ext      [ chunk-ext ] after the size   CR -> SizeLf (only where an extension may end)
//!   SizeLf   the LF closing the size line   LF: size > 0 -> Data, size = 0 -> Trailer
//!   Data     chunk-data, counted down       all of it read -> DataCr
//!   DataCr   the CR after chunk-data        CR -> DataLf
//!   DataLf   the LF after chunk-data        LF -> Size (the next chunk)
//!   Trailer  trailer-section, checked       the empty line's CRLF -> Done
//!   Done     body complete                  consumes nothing, ever again
//!
//!          start
//!            |
//!            v
//!   +----> Size ---- BWS or ";" ----> Ext
//!   |        |                         |
//!   |        CR                        CR
//!   |        |                         |
//!   |        +------> SizeLf <---------+
//!   |                   |
//!   |      +---- LF ----+---- LF ----+
//!   |      | size > 0      size = 0  |
//!   |      v                         v
//!   |     Data                    Trailer
//!   |      | all data read           | field lines, then CRLF
//!   |      v                         v
//!   |    DataCr                     Done
//!   |      | CR
//!   |      v
//!   |    DataLf
//!   |      | LF
//!   +------+
//! ```
//!
//! The framing states read one byte per transition; `Data` and `Length` take a whole run of
//! bytes at once, which is why a megabyte body costs one transition, not a million.

use std::ops::Range;

/// The longest chunk-size line we read, counting the hex digits and any extensions but not
/// the CRLF. Real clients send a few hex digits and (almost always) no extensions; 4 KiB is
/// generous. Without a cap, a peer could stream an endless extension that never counts
/// against the body limit (RFC 9112 §7.1.1: "A server ought to limit the total length of
/// chunk extensions received in a request").
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// The longest trailer section we read, counting every byte from the first trailer field
/// through the final empty line (CRLFs included). Trailers are discarded, so this only
/// bounds how long a peer can keep us reading bytes that lead nowhere (RFC 9112 §7.1.2).
pub const MAX_TRAILER_BYTES: usize = 8192;

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const SP: u8 = b' ';
const HTAB: u8 = b'\t';

/// How the body of a request is framed (decided from the head, RFC 9112 §6.3).
/// (This type is defined here; the head parser produces it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: neither `Transfer-Encoding` nor `Content-Length` (§6.3 step 7).
    None,
    /// `Content-Length: n` without `Transfer-Encoding` (§6.3 step 6).
    Length(u64),
    /// `Transfer-Encoding` whose final coding is `chunked` (§6.3 step 4).
    Chunked,
}

/// Why a body could not be decoded. Each variant is named after where decoding failed; the
/// connection answers and then closes, since the framing of what follows is unknowable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The chunk-size line is not `1*HEXDIG [ext] CRLF`, or overflows: no digits, a byte after
    /// the digits that cannot start an extension, a bare LF, or a CR not followed by LF
    /// (→ 400).
    BadChunkSize,
    /// A chunk's data is not followed by CRLF (→ 400).
    BadChunkEnd,
    /// A chunk extension or trailer line is malformed: control characters, a bare CR or LF
    /// inside it, a trailer line without a colon, a name that is not a token (→ 400).
    BadChunkSyntax,
    /// The decoded body would exceed the limit (→ 413).
    TooLarge,
    /// A chunk-size line (size + extensions) exceeded [`MAX_CHUNK_LINE_BYTES`], or the trailer
    /// section exceeded [`MAX_TRAILER_BYTES`] (→ 400).
    LineTooLong,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyError::BadChunkSize => "malformed chunk-size line",
            BodyError::BadChunkEnd => "chunk data not followed by CRLF",
            BodyError::BadChunkSyntax => "malformed chunk extension or trailer field",
            BodyError::TooLarge => "request body exceeds the size limit",
            BodyError::LineTooLong => "chunk-size line or trailer section too long",
        })
    }
}

impl std::error::Error for BodyError {}

/// One call's worth of progress over the input slice given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How many input bytes were used (framing and data); the caller drops them.
    pub consumed: usize,
    /// Which of those input bytes (a range inside input[..consumed]) are body data.
    /// `0..0` when this step found no data.
    pub data: Range<usize>,
    /// The body is complete (last chunk and trailers seen, or Content-Length reached).
    pub done: bool,
}

/// Decodes one request body; make a new one per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDecoder {
    /// Where in the body we are; see the module doc for the diagram.
    state: State,
    /// Body bytes handed out so far; never above `limit`.
    received: u64,
    /// The most body bytes this request may carry (`MAX_BODY_BYTES`).
    limit: u64,
}

/// Where the decoder is. The body-data states take runs of bytes; the framing states
/// ([`Frame`]) take one byte per transition, so they live in their own enum and the
/// byte-level transition function cannot be handed a data state by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `Content-Length` body: `remaining` bytes still to pass straight through.
    Length { remaining: u64 },
    /// Inside one chunk's data: `remaining` bytes of it still to come.
    Data { remaining: u64 },
    /// Inside chunked framing: a size line, a data CRLF or the trailer section.
    Frame(Frame),
    /// The body is complete; nothing more is consumed.
    Done,
}

/// The chunked framing states, each reading one byte at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Reading chunk-size: `value` of the `digits` hex digits read so far (0 digits: the
    /// line has just begun).
    Size { value: u64, digits: usize },
    /// Past the size, inside the chunk extensions; `line_len` counts the line so far.
    Ext {
        size: u64,
        line_len: usize,
        at: ExtAt,
    },
    /// The size line's CR is read; its LF must come next.
    SizeLf { size: u64 },
    /// The chunk's data is all read; the CR of its CRLF must come next.
    DataCr,
    /// The CR after the chunk's data is read; the LF must come next.
    DataLf,
    /// After the last chunk: the trailer section, `len` bytes of it read so far.
    Trailer { len: usize, at: TrailerAt },
}

/// Where inside `chunk-ext` we are (RFC 9112 §7.1.1):
///
/// ```text
/// chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-name = token
/// chunk-ext-val  = token / quoted-string
/// ```
///
/// Extensions are ignored, but checked: a decoder that skipped "anything up to CR" would
/// accept bytes (control characters, a CR inside a quoted string) that another parser on
/// the path may read differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtAt {
    /// BWS that is not yet followed by `;` (after the size or an extension value).
    BeforeSemi,
    /// After `;`: optional BWS, then the first byte of the name.
    BeforeName,
    /// Inside the extension name.
    Name,
    /// BWS after the name: `=`, or `;` for the next extension, must follow.
    AfterName,
    /// After `=`: optional BWS, then a token or a quoted-string.
    BeforeValue,
    /// Inside a token value.
    Token,
    /// Inside a quoted-string value.
    Quoted,
    /// After a backslash inside a quoted-string (quoted-pair).
    QuotedPair,
    /// Just after the closing quote.
    AfterQuoted,
}

/// Where inside the trailer section we are (RFC 9112 §7.1.2, field lines as in §5):
///
/// ```text
/// trailer-section = *( field-line CRLF )
/// field-line      = field-name ":" OWS field-value OWS
/// ```
///
/// Trailer fields are discarded (we never promise to act on them), but each line must still
/// look like a field line, so that junk after the last chunk is an error and not silently
/// eaten as "trailers".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrailerAt {
    /// At the start of a line: a field name begins, or CR starts the final empty line.
    LineStart,
    /// Inside the field name, until the colon.
    Name,
    /// After the colon, until the CR.
    Value,
    /// A field line's CR is read; its LF must come next.
    LineLf,
    /// The final empty line's CR is read; its LF ends the body.
    EndLf,
}

impl BodyDecoder {
    /// Starts decoding a body framed as `framing`. `limit`: the most decoded body bytes
    /// allowed (`MAX_BODY_BYTES`). For `Length(n)` with `n > limit` returns `Err(TooLarge)`
    /// right away (the caller answers 413 before reading). `None` and `Length(0)` start done.
    ///
    /// # Errors
    ///
    /// [`BodyError::TooLarge`] when a `Content-Length` is already over `limit`.
    pub fn new(framing: Framing, limit: u64) -> Result<BodyDecoder, BodyError> {
        let state = match framing {
            // §6.3 step 7: a request with neither header has a zero-length body.
            Framing::None | Framing::Length(0) => State::Done,
            // Refuse before reading: the peer told us up front it will not fit.
            Framing::Length(n) if n > limit => return Err(BodyError::TooLarge),
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::Frame(Frame::Size {
                value: 0,
                digits: 0,
            }),
        };
        Ok(BodyDecoder {
            state,
            received: 0,
            limit,
        })
    }

    /// Decodes from the front of `input`. Returns one [`Step`]: consumes framing bytes and at
    /// most ONE contiguous run of data. "Not enough bytes yet" is never an error: it is a
    /// `Step` with less consumed (possibly 0) and `done == false`. The caller calls again
    /// while `consumed > 0 && !done`. A decoder that is done returns
    /// `Step { consumed: 0, data: 0..0, done: true }` and never consumes bytes past the end of
    /// the body (pipelined requests follow it).
    ///
    /// After its data run a step keeps reading framing (the chunk's CRLF, the next size line,
    /// the trailers) until the next run would start, so the last chunk and `done` usually
    /// arrive together. An error anywhere in `input` wins over data read earlier in the same
    /// call: the body is being refused anyway.
    ///
    /// # Errors
    ///
    /// `BadChunkSize`, `BadChunkEnd`, `BadChunkSyntax` or `LineTooLong` for chunked framing
    /// that breaks the grammar or its caps; `TooLarge` for a chunk whose size line would take
    /// the body past `limit`. An error ends the request: the connection answers and closes
    /// rather than guess where the next request starts.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        // `pos` only ever advances over bytes that exist, so `pos <= input.len()` throughout.
        let mut pos = 0;
        let mut data: Option<Range<usize>> = None;
        loop {
            match self.state {
                // The end of the body: what follows is the next request's.
                State::Done => break,
                // Content-Length: hand the bytes through; done when none remain (§6.3 step 6).
                State::Length { remaining } => {
                    if pos == input.len() {
                        break;
                    }
                    let (run, left) = self.take_run(input.len(), pos, remaining);
                    pos = run.end;
                    data = Some(run);
                    self.state = match left {
                        0 => State::Done,
                        _ => State::Length { remaining: left },
                    };
                }
                // chunk-data: one run per Step (a Step has one range); then its CRLF (§7.1).
                State::Data { remaining } => {
                    if data.is_some() || pos == input.len() {
                        break;
                    }
                    let (run, left) = self.take_run(input.len(), pos, remaining);
                    pos = run.end;
                    data = Some(run);
                    self.state = match left {
                        0 => State::Frame(Frame::DataCr),
                        _ => State::Data { remaining: left },
                    };
                }
                // Framing: one byte, one transition.
                State::Frame(frame) => {
                    let Some(&byte) = input.get(pos) else { break };
                    let room = self.limit.saturating_sub(self.received);
                    self.state = frame.next(byte, room)?;
                    pos += 1;
                }
            }
        }
        Ok(Step {
            consumed: pos,
            data: data.unwrap_or(0..0),
            done: self.is_done(),
        })
    }

    /// The body is complete; `decode` will consume nothing more.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decoded body bytes so far.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes the next run of body bytes: as many of the `remaining` as the input holds after
    /// `pos`. Returns the run and how many bytes are still to come after it.
    fn take_run(&mut self, input_len: usize, pos: usize, remaining: u64) -> (Range<usize>, u64) {
        let available = input_len - pos;
        // If `remaining` does not even fit in a usize, it is certainly more than we hold.
        let take = usize::try_from(remaining).map_or(available, |r| r.min(available));
        // usize -> u64 never truncates on the platforms Rust supports (usize is <= 64 bits).
        let take_u64 = take as u64;
        self.received += take_u64;
        (pos..pos + take, remaining - take_u64)
    }
}

impl Frame {
    /// The transition for one framing byte. `room` is how many more body bytes the limit
    /// allows; it is checked as soon as a chunk's size is known. (The whole chunked
    /// grammar as one `match (state, byte)`: longer than most functions, on purpose.)
    fn next(self, byte: u8, room: u64) -> Result<State, BodyError> {
        let frame = match (self, byte) {
            // chunk-size = 1*HEXDIG; leading zeros are fine, overflow is not (§7.1: "anticipate
            // potentially large hexadecimal numerals ... prevent ... overflows").
            (Frame::Size { value, digits }, _) if byte.is_ascii_hexdigit() => Frame::Size {
                value: value
                    .checked_mul(16)
                    .and_then(|v| v.checked_add(hex_value(byte)))
                    .ok_or(BodyError::BadChunkSize)?,
                digits: grow(digits, MAX_CHUNK_LINE_BYTES)?,
            },
            // No digit at all (an empty size, `+5`, `-1`, a stray CRLF) is not a chunk-size.
            (Frame::Size { digits: 0, .. }, _) => return Err(BodyError::BadChunkSize),
            // CR ends the size line; a too-large chunk is refused before its data (→ 413).
            (Frame::Size { value, .. }, CR) => Frame::SizeLf {
                size: fits(value, room)?,
            },
            // `;` or BWS starts the extensions (§7.1.1); the size is known, so check it now.
            (Frame::Size { value, digits }, b';' | SP | HTAB) => Frame::Ext {
                size: fits(value, room)?,
                line_len: grow(digits, MAX_CHUNK_LINE_BYTES)?,
                at: if byte == b';' {
                    ExtAt::BeforeName
                } else {
                    ExtAt::BeforeSemi
                },
            },
            // Anything else after the digits (`x` of `0x5`, a bare LF, ...) breaks the line.
            (Frame::Size { .. }, _) => return Err(BodyError::BadChunkSize),
            // CR ends the line, but only where a complete extension ends.
            (Frame::Ext { size, at, .. }, CR) if at.may_end_line() => Frame::SizeLf { size },
            // Any other byte must continue the extension grammar, within the line cap.
            (Frame::Ext { size, line_len, at }, _) => Frame::Ext {
                size,
                at: at.next(byte)?,
                line_len: grow(line_len, MAX_CHUNK_LINE_BYTES)?,
            },
            // The size line ends in CRLF; a chunk of size 0 is the last-chunk (§7.1).
            (Frame::SizeLf { size: 0 }, LF) => Frame::Trailer {
                len: 0,
                at: TrailerAt::LineStart,
            },
            // Otherwise its data follows.
            (Frame::SizeLf { size }, LF) => return Ok(State::Data { remaining: size }),
            // A CR not followed by LF (§2.2: a bare CR is invalid).
            (Frame::SizeLf { .. }, _) => return Err(BodyError::BadChunkSize),
            // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF: the CR...
            (Frame::DataCr, CR) => Frame::DataLf,
            // ...and the LF; then the next chunk's size line.
            (Frame::DataLf, LF) => Frame::Size {
                value: 0,
                digits: 0,
            },
            // Data longer than its size, or a bare LF / CR: the framing is lost.
            (Frame::DataCr | Frame::DataLf, _) => return Err(BodyError::BadChunkEnd),
            // The empty line that ends the trailer section ends the body (§7.1.2).
            (
                Frame::Trailer {
                    len,
                    at: TrailerAt::EndLf,
                },
                LF,
            ) => {
                grow(len, MAX_TRAILER_BYTES)?;
                return Ok(State::Done);
            }
            // Every other trailer byte, CRLFs included, counts against the section cap.
            (Frame::Trailer { len, at }, _) => Frame::Trailer {
                at: at.next(byte)?,
                len: grow(len, MAX_TRAILER_BYTES)?,
            },
        };
        Ok(State::Frame(frame))
    }
}

impl ExtAt {
    /// Whether a CR here ends a well-formed size line: after a complete name or value, not
    /// after a dangling `;`, `=` or BWS (the grammar has no trailing whitespace).
    fn may_end_line(self) -> bool {
        matches!(self, ExtAt::Name | ExtAt::Token | ExtAt::AfterQuoted)
    }

    /// The transition for one byte inside the extensions (never the line-ending CR; see
    /// [`Frame::next`]). Any byte the grammar does not allow here is `BadChunkSyntax`.
    fn next(self, byte: u8) -> Result<ExtAt, BodyError> {
        let at = match (self, byte) {
            // BWS may precede `;` and `=`, and follow them.
            (
                ExtAt::BeforeSemi | ExtAt::BeforeName | ExtAt::AfterName | ExtAt::BeforeValue,
                SP | HTAB,
            ) => self,
            // `;` starts the next extension wherever a previous one may end.
            (
                ExtAt::BeforeSemi
                | ExtAt::Name
                | ExtAt::AfterName
                | ExtAt::Token
                | ExtAt::AfterQuoted,
                b';',
            ) => ExtAt::BeforeName,
            // chunk-ext-name = token.
            (ExtAt::BeforeName | ExtAt::Name, _) if is_tchar(byte) => ExtAt::Name,
            // BWS after the name, before `=` or `;`.
            (ExtAt::Name, SP | HTAB) => ExtAt::AfterName,
            // `=` introduces the value.
            (ExtAt::Name | ExtAt::AfterName, b'=') => ExtAt::BeforeValue,
            // chunk-ext-val = quoted-string...
            (ExtAt::BeforeValue, b'"') => ExtAt::Quoted,
            // ...or token.
            (ExtAt::BeforeValue | ExtAt::Token, _) if is_tchar(byte) => ExtAt::Token,
            // BWS after a value: only `;` may follow it.
            (ExtAt::Token | ExtAt::AfterQuoted, SP | HTAB) => ExtAt::BeforeSemi,
            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 §5.6.4).
            (ExtAt::Quoted, b'"') => ExtAt::AfterQuoted,
            (ExtAt::Quoted, b'\\') => ExtAt::QuotedPair,
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text: no CTLs, no bare CR.
            (ExtAt::Quoted, _) if is_field_text(byte) => ExtAt::Quoted,
            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ).
            (ExtAt::QuotedPair, _) if is_field_text(byte) => ExtAt::Quoted,
            // Control characters, a LF, a CR out of place, separators where a token belongs.
            _ => return Err(BodyError::BadChunkSyntax),
        };
        Ok(at)
    }
}

impl TrailerAt {
    /// The transition for one byte of the trailer section (never the final LF; see
    /// [`Frame::next`]). Any byte a field line does not allow here is `BadChunkSyntax`.
    fn next(self, byte: u8) -> Result<TrailerAt, BodyError> {
        let at = match (self, byte) {
            // An empty line: the trailer section is over once its LF arrives.
            (TrailerAt::LineStart, CR) => TrailerAt::EndLf,
            // field-name = token (RFC 9110 §5.1).
            (TrailerAt::LineStart | TrailerAt::Name, _) if is_tchar(byte) => TrailerAt::Name,
            // The colon ends the name; §5.1 allows no whitespace before it.
            (TrailerAt::Name, b':') => TrailerAt::Value,
            // The CR ends the field line.
            (TrailerAt::Value, CR) => TrailerAt::LineLf,
            // field-value: VCHAR, obs-text, SP and HTAB; no other CTLs, no bare CR or LF.
            (TrailerAt::Value, _) if is_field_text(byte) => TrailerAt::Value,
            // The LF after the CR; the next line begins.
            (TrailerAt::LineLf, LF) => TrailerAt::LineStart,
            // A line without a colon, obs-fold (§5.2: leading whitespace), a bare CR or LF,
            // or a stray byte after a line's CR.
            _ => return Err(BodyError::BadChunkSyntax),
        };
        Ok(at)
    }
}

/// Counts one more byte of a capped line or section.
fn grow(len: usize, cap: usize) -> Result<usize, BodyError> {
    if len < cap {
        Ok(len + 1)
    } else {
        Err(BodyError::LineTooLong)
    }
}

/// Checks a chunk's size against the room the body limit has left.
fn fits(size: u64, room: u64) -> Result<u64, BodyError> {
    if size <= room {
        Ok(size)
    } else {
        Err(BodyError::TooLarge)
    }
}

/// The value of an ASCII hex digit (callers check `is_ascii_hexdigit` first; anything else
/// maps to 0 rather than panicking).
fn hex_value(byte: u8) -> u64 {
    let value = match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    };
    u64::from(value)
}

/// tchar (RFC 9110 §5.6.2): the bytes allowed in a token.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// HTAB / SP / VCHAR / obs-text: the bytes a field value or quoted-pair may hold; i.e. no
/// control characters other than HTAB, and no DEL.
fn is_field_text(byte: u8) -> bool {
    matches!(byte, HTAB | SP | 0x21..=0x7e | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit used unless a case is about the limit.
    const LIMIT: u64 = 1 << 20;

    /// What feeding a whole input (in some split) produced.
    #[derive(Debug, PartialEq, Eq)]
    struct Fed {
        body: Vec<u8>,
        consumed: usize,
        done: bool,
    }

    /// Feeds `pieces` the way the connection does: append to a buffer, call `decode` while it
    /// consumes and is not done, drop what was consumed. Checks every Step's invariants.
    fn feed(framing: Framing, limit: u64, pieces: &[&[u8]]) -> Result<Fed, BodyError> {
        let mut decoder = BodyDecoder::new(framing, limit)?;
        let mut buf = Vec::new();
        let mut body = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                let step = decoder.decode(&buf)?;
                assert!(
                    step.consumed <= buf.len(),
                    "consumed past the input: {step:?}"
                );
                assert!(step.data.start <= step.data.end && step.data.end <= step.consumed);
                assert_eq!(step.done, decoder.is_done());
                body.extend_from_slice(&buf[step.data.clone()]);
                buf.drain(..step.consumed);
                consumed += step.consumed;
                if step.consumed == 0 || step.done {
                    break;
                }
            }
        }
        assert_eq!(decoder.received(), body.len() as u64);
        if decoder.is_done() {
            // A finished decoder leaves whatever follows alone.
            let again = decoder.decode(&buf)?;
            assert_eq!(
                again,
                Step {
                    consumed: 0,
                    data: 0..0,
                    done: true
                }
            );
        }
        Ok(Fed {
            body,
            consumed,
            done: decoder.is_done(),
        })
    }

    /// Feeds `input` whole, in every two-way split, and byte by byte; all must agree.
    fn feed_every_way(framing: Framing, limit: u64, input: &[u8]) -> Result<Fed, BodyError> {
        let whole = feed(framing, limit, &[input]);
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(feed(framing, limit, &[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(framing, limit, &bytes), whole, "byte by byte");
        whole
    }

    /// (name, framing, the body's bytes on the wire, what follows them, decoded body).
    /// What follows is the next pipelined request; the decoder must leave it alone.
    type Valid = (
        &'static str,
        Framing,
        &'static [u8],
        &'static [u8],
        &'static [u8],
    );

    const VALID: &[Valid] = &[
        (
            "single chunk",
            Framing::Chunked,
            b"5\r\nhello\r\n0\r\n\r\n",
            b"",
            b"hello",
        ),
        (
            "many chunks",
            Framing::Chunked,
            b"5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n\r\n",
            b"",
            b"hello, world",
        ),
        (
            "hex upper and lower case",
            Framing::Chunked,
            b"a\r\n0123456789\r\nB\r\nabcdefghijk\r\n0\r\n\r\n",
            b"",
            b"0123456789abcdefghijk",
        ),
        (
            "leading zeros",
            Framing::Chunked,
            b"0005\r\nhello\r\n000\r\n\r\n",
            b"",
            b"hello",
        ),
        (
            "leading zeros past 16 digits",
            Framing::Chunked,
            b"000000000000000000005\r\nhello\r\n0\r\n\r\n",
            b"",
            b"hello",
        ),
        (
            "extension a=b",
            Framing::Chunked,
            b"5;a=b\r\nhello\r\n0\r\n\r\n",
            b"",
            b"hello",
        ),
        (
            "extension name only",
            Framing::Chunked,
            b"5;a\r\nhello\r\n0;z\r\n\r\n",
            b"",
            b"hello",
        ),
        (
            "extension quoted with semicolon",
            Framing::Chunked,
            b"5;a=\"q;x\"\r\nhello\r\n0\r\n\r\n",
            b"",
            b"hello",
        ),
        (
            "extension quoted pair",
            Framing::Chunked,
            b"5;a=\"\\\"\\\\ \t\"\r\nhello\r\n0\r\n\r\n",
            b"",
            b"hello",
        ),
        (
            "extensions with BWS",
            Framing::Chunked,
            b"5 ; a = b\t;\tc ;d= \"e\"\r\nhello\r\n0 ;x=y\r\n\r\n",
            b"",
            b"hello",
        ),
        ("empty trailers", Framing::Chunked, b"0\r\n\r\n", b"", b""),
        (
            "some trailers",
            Framing::Chunked,
            b"5\r\nhello\r\n0\r\nX-Sum: abc\r\nX-Empty:\r\nX-Tab:\t1 2\t\r\n\r\n",
            b"",
            b"hello",
        ),
        (
            "pipelined request after chunked",
            Framing::Chunked,
            b"5\r\nhello\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"hello",
        ),
        (
            "pipelined junk after chunked",
            Framing::Chunked,
            b"0\r\n\r\n",
            b"\n\r\x00",
            b"",
        ),
        ("length", Framing::Length(5), b"hello", b"", b"hello"),
        (
            "length that looks chunked",
            Framing::Length(10),
            b"5\r\nhello\r\n",
            b"",
            b"5\r\nhello\r\n",
        ),
        (
            "pipelined request after length",
            Framing::Length(5),
            b"hello",
            b"GET / HTTP/1.1\r\n\r\n",
            b"hello",
        ),
        (
            "length zero",
            Framing::Length(0),
            b"",
            b"GET / HTTP/1.1\r\n\r\n",
            b"",
        ),
        ("none", Framing::None, b"", b"GET / HTTP/1.1\r\n\r\n", b""),
    ];

    #[test]
    fn decode_yields_body_for_valid_input_in_every_split() {
        for &(name, framing, message, next, body) in VALID {
            let input = [message, next].concat();
            let fed = feed_every_way(framing, LIMIT, &input)
                .unwrap_or_else(|e| panic!("{name}: unexpected {e:?}"));
            assert_eq!(fed.body, body, "{name}: body");
            assert_eq!(fed.consumed, message.len(), "{name}: consumed");
            assert!(fed.done, "{name}: done");
        }
    }

    #[test]
    fn decode_waits_without_error_on_every_strict_prefix() {
        for &(name, framing, message, _, _) in VALID {
            for end in 0..message.len() {
                let fed = feed_every_way(framing, LIMIT, &message[..end])
                    .unwrap_or_else(|e| panic!("{name}: prefix of {end}: {e:?}"));
                assert!(!fed.done, "{name}: done after a prefix of {end}");
                // A partial line is remembered in the state, not left in the buffer.
                assert_eq!(fed.consumed, end, "{name}: consumed of a prefix of {end}");
            }
        }
    }

    /// (name, framing, limit, input, error). The error must be the same in every split.
    const INVALID: &[(&str, Framing, u64, &[u8], BodyError)] = &[
        (
            "empty size",
            Framing::Chunked,
            LIMIT,
            b"\r\nhello\r\n0\r\n\r\n",
            BodyError::BadChunkSize,
        ),
        (
            "hex prefix",
            Framing::Chunked,
            LIMIT,
            b"0x5\r\nhello\r\n0\r\n\r\n",
            BodyError::BadChunkSize,
        ),
        (
            "minus sign",
            Framing::Chunked,
            LIMIT,
            b"-1\r\nh\r\n0\r\n\r\n",
            BodyError::BadChunkSize,
        ),
        (
            "plus sign",
            Framing::Chunked,
            LIMIT,
            b"+5\r\nhello\r\n0\r\n\r\n",
            BodyError::BadChunkSize,
        ),
        (
            "size overflows u64",
            Framing::Chunked,
            u64::MAX,
            b"fffffffffffffffff\r\n",
            BodyError::BadChunkSize,
        ),
        (
            "bare LF after size",
            Framing::Chunked,
            LIMIT,
            b"5\nhello\r\n0\r\n\r\n",
            BodyError::BadChunkSize,
        ),
        (
            "bare CR after size",
            Framing::Chunked,
            LIMIT,
            b"5\rhello\r\n0\r\n\r\n",
            BodyError::BadChunkSize,
        ),
        (
            "bare CR after extension",
            Framing::Chunked,
            LIMIT,
            b"5;a\rhello\r\n",
            BodyError::BadChunkSize,
        ),
        (
            "BWS before CRLF",
            Framing::Chunked,
            LIMIT,
            b"5 \r\nhello\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "junk after size",
            Framing::Chunked,
            LIMIT,
            b"5 x\r\nhello\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "missing CRLF after data",
            Framing::Chunked,
            LIMIT,
            b"5\r\nhelloX",
            BodyError::BadChunkEnd,
        ),
        (
            "bare LF after data",
            Framing::Chunked,
            LIMIT,
            b"5\r\nhello\n0\r\n\r\n",
            BodyError::BadChunkEnd,
        ),
        (
            "bare CR after data",
            Framing::Chunked,
            LIMIT,
            b"5\r\nhello\r0\r\n\r\n",
            BodyError::BadChunkEnd,
        ),
        (
            "control char in extension",
            Framing::Chunked,
            LIMIT,
            b"5;a\x01=b\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "control char in ext value",
            Framing::Chunked,
            LIMIT,
            b"5;a=\"\x7f\"\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "bare LF in extension",
            Framing::Chunked,
            LIMIT,
            b"5;a\nhello\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "bare CR in quoted ext",
            Framing::Chunked,
            LIMIT,
            b"5;a=\"x\ry\"\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "empty extension name",
            Framing::Chunked,
            LIMIT,
            b"5;\r\nhello\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "empty extension value",
            Framing::Chunked,
            LIMIT,
            b"5;a=\r\nhello\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "unclosed quote",
            Framing::Chunked,
            LIMIT,
            b"5;a=\"b\r\nhello\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "trailer without colon",
            Framing::Chunked,
            LIMIT,
            b"0\r\nX-Sum abc\r\n\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "trailer space before colon",
            Framing::Chunked,
            LIMIT,
            b"0\r\nX-Sum : a\r\n\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "trailer empty name",
            Framing::Chunked,
            LIMIT,
            b"0\r\n: a\r\n\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "trailer obs-fold",
            Framing::Chunked,
            LIMIT,
            b"0\r\nA: b\r\n c\r\n\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "trailer bare CR",
            Framing::Chunked,
            LIMIT,
            b"0\r\nA: b\rc\r\n\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "trailer bare LF",
            Framing::Chunked,
            LIMIT,
            b"0\r\nA: b\n\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "trailer control char",
            Framing::Chunked,
            LIMIT,
            b"0\r\nA: \x00\r\n\r\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "bare LF ends trailers",
            Framing::Chunked,
            LIMIT,
            b"0\r\n\n",
            BodyError::BadChunkSyntax,
        ),
        (
            "bare CR ends trailers",
            Framing::Chunked,
            LIMIT,
            b"0\r\n\rX",
            BodyError::BadChunkSyntax,
        ),
        (
            "one chunk over limit",
            Framing::Chunked,
            4,
            b"5\r\nhello\r\n0\r\n\r\n",
            BodyError::TooLarge,
        ),
        (
            "cumulative chunks over limit",
            Framing::Chunked,
            8,
            b"5\r\nhello\r\n4;a=b\r\n",
            BodyError::TooLarge,
        ),
        (
            "length over limit",
            Framing::Length(5),
            4,
            b"hello",
            BodyError::TooLarge,
        ),
    ];

    #[test]
    fn decode_rejects_malformed_input_in_every_split() {
        for &(name, framing, limit, input, ref error) in INVALID {
            let got = feed_every_way(framing, limit, input);
            assert_eq!(got.as_ref().err(), Some(error), "{name}: got {got:?}");
        }
    }

    #[test]
    fn new_refuses_length_over_limit_before_reading() {
        assert_eq!(
            BodyDecoder::new(Framing::Length(11), 10),
            Err(BodyError::TooLarge)
        );
        assert!(BodyDecoder::new(Framing::Length(10), 10).is_ok());
    }

    #[test]
    fn decode_rejects_size_line_over_cap() {
        // Leading zeros are valid digits, so only the line cap stops them.
        let mut zeros = vec![b'0'; MAX_CHUNK_LINE_BYTES + 1];
        zeros.extend_from_slice(b"5\r\nhello\r\n");
        let got = feed(Framing::Chunked, LIMIT, &[&zeros]);
        assert_eq!(got, Err(BodyError::LineTooLong));

        // An extension that never ends.
        let mut ext = b"5;a=".to_vec();
        ext.resize(MAX_CHUNK_LINE_BYTES + 1, b'x');
        assert_eq!(
            feed(Framing::Chunked, LIMIT, &[&ext]),
            Err(BodyError::LineTooLong)
        );
    }

    #[test]
    fn decode_accepts_size_line_at_cap() {
        let mut line = b"5;a=".to_vec();
        line.resize(MAX_CHUNK_LINE_BYTES, b'x');
        line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        let fed = feed(Framing::Chunked, LIMIT, &[&line]).expect("a line at the cap is fine");
        assert_eq!(fed.body, b"hello");
        assert!(fed.done);
    }

    /// A last chunk followed by a trailer section of exactly `len` bytes (`len` >= 10): one
    /// padded field line, then the empty line.
    fn last_chunk_with_trailers_of(len: usize) -> Vec<u8> {
        let mut message = b"0\r\nX-Pad: ".to_vec();
        // "0\r\n" is not part of the section; the two CRLFs at the end are.
        message.resize(3 + len - 4, b'p');
        message.extend_from_slice(b"\r\n\r\n");
        message
    }

    #[test]
    fn decode_accepts_trailer_section_at_cap() {
        let message = last_chunk_with_trailers_of(MAX_TRAILER_BYTES);
        let fed = feed(Framing::Chunked, LIMIT, &[&message]).expect("a section at the cap");
        assert!(fed.done);
        assert_eq!(fed.consumed, message.len());
    }

    #[test]
    fn decode_rejects_trailer_section_over_cap() {
        let message = last_chunk_with_trailers_of(MAX_TRAILER_BYTES + 1);
        let got = feed(Framing::Chunked, LIMIT, &[&message]);
        assert_eq!(got, Err(BodyError::LineTooLong));
    }

    #[test]
    fn decode_returns_one_data_run_per_step() {
        let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut decoder = BodyDecoder::new(Framing::Chunked, LIMIT).expect("chunked");
        let first = decoder.decode(input).expect("valid");
        // The first run, its CRLF and the next size line; stops where "de" begins.
        assert_eq!(
            first,
            Step {
                consumed: 11,
                data: 3..6,
                done: false
            }
        );
        let second = decoder.decode(&input[11..]).expect("valid");
        // The second run, then framing through the end of the body.
        assert_eq!(
            second,
            Step {
                consumed: 9,
                data: 0..2,
                done: true
            }
        );
        assert_eq!(decoder.received(), 5);
    }

    #[test]
    fn decode_counts_down_length_in_one_step() {
        let mut decoder = BodyDecoder::new(Framing::Length(8), LIMIT).expect("fits");
        assert_eq!(
            decoder.decode(b"abc").expect("ok"),
            Step {
                consumed: 3,
                data: 0..3,
                done: false
            }
        );
        assert_eq!(
            decoder.decode(b"").expect("ok"),
            Step {
                consumed: 0,
                data: 0..0,
                done: false
            }
        );
        assert_eq!(
            decoder.decode(b"defgh GET").expect("ok"),
            Step {
                consumed: 5,
                data: 0..5,
                done: true
            }
        );
        assert_eq!(decoder.received(), 8);
    }

    #[test]
    fn data_state_finishes_chunk_split_mid_data() {
        // Built from its state, as the connection would find it mid-chunk.
        let mut decoder = BodyDecoder {
            state: State::Data { remaining: 3 },
            received: 2,
            limit: LIMIT,
        };
        let step = decoder.decode(b"cde\r\n0\r\n\r\n").expect("valid");
        assert_eq!(
            step,
            Step {
                consumed: 10,
                data: 0..3,
                done: true
            }
        );
        assert_eq!(decoder.received(), 5);
    }

    #[test]
    fn size_state_refuses_chunk_past_remaining_room() {
        let mut decoder = BodyDecoder {
            state: State::Frame(Frame::Size {
                value: 0,
                digits: 0,
            }),
            received: 9,
            limit: 10,
        };
        assert_eq!(decoder.decode(b"1\r\n").map(|s| s.consumed), Ok(3));
        let mut decoder = BodyDecoder {
            state: State::Frame(Frame::Size {
                value: 0,
                digits: 0,
            }),
            received: 9,
            limit: 10,
        };
        assert_eq!(decoder.decode(b"2\r\n"), Err(BodyError::TooLarge));
    }

    #[test]
    fn decode_agrees_with_itself_on_arbitrary_input() {
        // A tiny deterministic generator (xorshift): no crates, same cases every run.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Bytes that matter to the grammar, so random inputs get deep into it.
        let alphabet = b"0123abcF \t;=\"\\\r\n:x\x00\x7f\xff";
        for _ in 0..500 {
            let len = (next() % 40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            // Whatever the outcome, every split must reach the same one (and none may panic).
            let _ = feed_every_way(Framing::Chunked, 16, &input);
        }
    }

    #[test]
    fn done_decoder_consumes_nothing() {
        let mut decoder = BodyDecoder::new(Framing::None, LIMIT).expect("no body");
        assert!(decoder.is_done());
        let step = decoder.decode(b"GET / HTTP/1.1\r\n\r\n").expect("done");
        assert_eq!(
            step,
            Step {
                consumed: 0,
                data: 0..0,
                done: true
            }
        );
    }
}
