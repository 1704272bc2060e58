//! A minimal HTTPS client for load tests: one TLS connection, HTTP/1.1 keep-alive or HTTP/2,
//! trusting only the test server's certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

pub fn tls_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

pub async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

pub enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

pub struct Client {
    sender: Sender,
}

pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca: &Path, h2: bool) -> Result<Client, String> {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = tls_connect(addr, tls_config(ca, alpn))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let io = TokioIo::new(tls);
        let sender = if h2 {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            Sender::H2(s)
        } else {
            let (s, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e}"))?;
            tokio::spawn(conn);
            Sender::H1(s)
        };
        Ok(Client { sender })
    }

    /// True once the server closed the connection.
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// The response head; the body is left to the caller.
    pub async fn send(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let mut b = http::Request::get(path).header("host", "127.0.0.1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                s.send_request(req).await.map_err(|e| format!("send: {e}"))
            }
            Sender::H2(s) => {
                let mut req = req;
                *req.uri_mut() = format!("https://127.0.0.1{path}").parse().unwrap();
                req.headers_mut().remove("host");
                s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                s.send_request(req).await.map_err(|e| format!("send: {e}"))
            }
        }
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Got, String> {
        let resp = self.send(path, headers).await?;
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Got {
            status,
            headers: parts.headers,
            body,
        })
    }
}
