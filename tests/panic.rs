//! A panicking handler costs its request a 500, never the server.
//!
//! The reference application has no route that panics, so this test embeds the engine
//! with a handler of its own: `/panic` panics, everything else goes to the reference
//! routes. The server runs on a thread of the test process and is left to end with it.

mod support;

use std::sync::mpsc;
use std::thread;

use lastcall::config::Config;
use lastcall::handler::{Answer, Ctx};
use lastcall::http::request::Request;
use lastcall::server::{self, Server, Started};
use support::{PATIENCE, Reader};

fn panicking(req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
    if req.path == "/panic" {
        panic!("this handler always panics");
    }
    lastcall::routes::handle(req, ctx)
}

#[test]
fn handler_panic_costs_one_500_and_the_next_request_is_served() {
    let (addr_tx, addr_rx) = mpsc::channel();
    thread::spawn(move || {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        let signals = server::install_signal_handlers().unwrap();
        let Ok(Started::Ready(server)) = Server::bind(&config, panicking, signals) else {
            panic!("server did not start");
        };
        addr_tx.send(server.local_addr()).unwrap();
        let _ = server.run();
    });
    let addr = addr_rx.recv_timeout(PATIENCE).expect("server address");

    let stream = std::net::TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut client = Reader::new(stream);
    // Both requests in one write: the panic must not lose the pipelined request behind it.
    client
        .send(b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
    let failed = client.response().expect("a 500 for the panicking request");
    assert_eq!(failed.status, 500);
    assert_eq!(failed.body_text(), r#"{"error":"internal error"}"#);
    let next = client
        .response()
        .expect("the next request on the same connection");
    assert_eq!(next.status, 200);
    assert_eq!(next.body_text(), "Hello, World!");
}
