//! The DevTools protocol over a WebSocket: numbered commands, replies matched by id, events
//! skipped. Sessions are flat (`Target.attachToTarget` with `flatten`): a page's commands carry its
//! session id.

use std::net::TcpStream;
use std::time::Duration;

use tungstenite::{Message, WebSocket};

pub struct Connection {
    socket: Option<WebSocket<TcpStream>>,
    next: u64,
}

impl Connection {
    pub fn none() -> Connection {
        Connection { socket: None, next: 1 }
    }

    /// Connects to a `ws://127.0.0.1:<port>/...` address.
    pub fn open(url: &str) -> Result<Connection, String> {
        let host = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| format!("not a ws:// address: {url}"))?;
        let stream = TcpStream::connect(host).map_err(|e| e.to_string())?;
        let (socket, _) = tungstenite::client(url, stream).map_err(|e| e.to_string())?;
        Ok(Connection {
            socket: Some(socket),
            next: 1,
        })
    }

    /// Sends a command; returns its id.
    pub fn send(&mut self, session: &str, method: &str, params: serde_json::Value) -> Result<u64, String> {
        let id = self.next;
        self.next += 1;
        let mut msg = serde_json::json!({ "id": id, "method": method, "params": params });
        if !session.is_empty() {
            msg["sessionId"] = session.into();
        }
        let socket = self.socket.as_mut().ok_or("not connected")?;
        socket.send(Message::text(msg.to_string())).map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// The reply to command `id` if one comes within `wait` (events and other replies are
    /// skipped); `None` if none came.
    pub fn receive(&mut self, id: u64, wait: Duration) -> Result<Option<serde_json::Value>, String> {
        let socket = self.socket.as_mut().ok_or("not connected")?;
        socket
            .get_mut()
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        loop {
            match socket.read() {
                Ok(Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                    if v["id"].as_u64() == Some(id) {
                        return Ok(Some(v));
                    }
                }
                Ok(Message::Close(_)) => return Err("the browser closed the connection".into()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}
