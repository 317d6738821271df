//! What a handler sees of a request: [`Request`], borrowed views into the connection's
//! input buffer — method, version, path, query, the body once read, and header fields on
//! demand.
//!
//! What it is not: parsing or judging the head (`request.rs` did, and handed over a
//! [`Head`] of offsets into the same bytes). It copies nothing: the view lives as long as
//! the handler call, and a field is re-read from the raw head only when asked for, so the
//! hot path does not pay for fields nobody reads.

use std::ops::Range;

use super::request::{Head, MAX_HEADERS, Method, Parsed, Version, offset_of};

/// What a handler sees of a request: borrowed views into the connection's input buffer.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request method.
    pub method: Method,
    /// The protocol version.
    pub version: Version,
    /// The path, exactly as sent (no percent-decoding).
    pub path: &'a str,
    /// The query after `?`, without it, exactly as sent.
    pub query: Option<&'a str>,
    /// The decoded body, once read; see [`Request::body`].
    body: Option<&'a [u8]>,
    /// The raw head, for the rare handler that wants a header field.
    head: &'a [u8],
}

impl<'a> Request<'a> {
    /// Builds the view from the bytes a `Head` was parsed from and the decoded body
    /// (`None` when the request has a body that has not been read yet).
    pub fn new(head: &Head, raw: &'a [u8], body: Option<&'a [u8]>) -> Request<'a> {
        // The ranges came from a successful parse of these same bytes, so they are in
        // range; httparse handed the target out as `&str` and the ranges split it at
        // ASCII bytes (`?`, `/`), so they are valid UTF-8 and the fallback never runs.
        let text = |r: &Range<usize>| std::str::from_utf8(&raw[r.clone()]).unwrap_or("");
        Request {
            method: head.method,
            version: head.version,
            path: text(&head.path),
            query: head.query.as_ref().map(text),
            body,
            head: &raw[..head.len],
        }
    }

    /// Builds the view from a fresh parse of `raw`: the path and query are cut out of the
    /// target `&str` httparse already validated, instead of being checked again as
    /// [`Request::new`] must (~100 instructions a request). Falls back to `new` when the
    /// head came from a copy.
    #[inline(always)] // once a request, into the connection's hot loop: a call costs more than it does
    pub fn parsed(parsed: &Parsed<'a>, raw: &'a [u8], body: Option<&'a [u8]>) -> Request<'a> {
        let head = &parsed.head;
        let Some(target) = parsed.target else {
            return Request::new(head, raw, body);
        };
        // The ranges index `raw`; the target is a slice of it, starting at `at`. They cut
        // it at ASCII bytes (`?`, `/`), so the slicing never fails.
        let at = offset_of(raw, target);
        let text = |r: &Range<usize>| target.get(r.start - at..r.end - at).unwrap_or("");
        // Mostly the path is the whole target (origin-form, no query): no cutting then.
        let (path, query) = match &head.query {
            None if head.path.len() == target.len() => (target, None),
            query => (text(&head.path), query.as_ref().map(text)),
        };
        Request {
            method: head.method,
            version: head.version,
            path,
            query,
            body,
            head: &raw[..head.len],
        }
    }

    /// The request body: empty for a request without one, and `None` while a body has not
    /// been read. A handler that needs it answers [`Answer::ReadBody`] and is called again
    /// with it.
    ///
    /// [`Answer::ReadBody`]: crate::handler::Answer::ReadBody
    pub fn body(&self) -> Option<&'a [u8]> {
        self.body
    }

    /// The first value of the named header field (case-insensitive), re-read from the raw
    /// head. Handlers rarely need one, so the hot path does not pay for keeping them.
    ///
    /// Only the field lines are parsed again, not the request line: that one may have said
    /// `HTTP/1.2`, which was served as 1.1 but which httparse would refuse.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        let mut found = None;
        self.for_each_header(|field, value| {
            if found.is_none() && field.eq_ignore_ascii_case(name) {
                found = Some(value);
            }
        });
        found
    }

    /// Calls `f` with every header field's name and value, in order, from one parse of
    /// the raw head: for a caller that wants several fields (the access log's `Referer`
    /// and `User-Agent`), one parse instead of one per field.
    pub fn for_each_header(&self, mut f: impl FnMut(&str, &'a [u8])) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Some(line_end) = self.head.iter().position(|&b| b == b'\n') else {
            return;
        };
        let fields = &self.head[line_end + 1..];
        if let Ok(httparse::Status::Complete((_, headers))) =
            httparse::parse_headers(fields, &mut headers)
        {
            for h in headers.iter() {
                f(h.name, h.value);
            }
        }
    }

    /// The value of `name` in the query string (`a=1&b=2`), undecoded. The first wins.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}
