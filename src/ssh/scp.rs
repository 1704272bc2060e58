//! Server side of legacy `scp -O` uploads: the `scp -t` sink wire protocol, spoken over an SSH
//! exec channel.
//!
//! This module owns the protocol only: parsing the `scp -t` command line the OpenSSH client sends,
//! the `C`/`T`/`D`/`E` records, the acknowledgement bytes and the `\x01` (warning) / `\x02`
//! (fatal) replies, mirroring OpenSSH's `scp.c` `sink()` so that the stock client behaves exactly
//! as it does against an OpenSSH server.
//!
//! It must never touch the filesystem directly nor resolve, normalise or follow paths itself: it
//! only glues the target from the command line and a validated single-component name together,
//! and every lookup and every byte stored goes through [`SinkFs`], whose implementor owns the jail.
//! Everything read here is untrusted client input, so record lines are bounded, numbers are
//! checked, names are validated and no more than one data chunk is ever held in memory.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest record line we accept (without its `\n`). OpenSSH's own sink uses a 2 KiB buffer; real
/// records are a few dozen bytes plus a file name (at most 255 bytes on every common filesystem),
/// so anything longer is garbage or an attempt to make us buffer without bound.
const MAX_RECORD_LEN: usize = 4096;
/// File data is moved in chunks of this size: large enough for throughput, small enough that a
/// multi-gigabyte package never sits in memory.
const DATA_CHUNK: usize = 256 * 1024;
/// Record lines are read through a small buffer; data reads bypass it (tokio's `BufReader` hands
/// reads larger than its capacity straight to the inner reader once it is drained).
const READ_BUFFER: usize = 8 * 1024;
/// Longest message text in a `\x01`/`\x02` reply. The client reads replies into a 2 KiB buffer and
/// stops at 2047 bytes; a longer line would leave the rest to be misread as the next reply.
const MAX_REPLY_LEN: usize = 1024;

/// The options of an `scp -t` command line as the OpenSSH client sends it, e.g. "scp -t /incoming/",
/// "scp -t -- .", "scp -v -d -t /incoming", "scp -p -t x.zip".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRequest {
    /// The target operand with shell quoting undone and a leading `~`/`~/` turned into the
    /// equivalent home-relative path. Not resolved: [`SinkFs`] interprets it.
    pub target: String,
    /// `-d`: the client sends several files, so the target must be an existing directory.
    pub target_must_be_dir: bool,
    /// `-p`: the client precedes each file with a `T` record. Informational only: like OpenSSH, the
    /// sink honours a `T` record whenever one arrives.
    pub preserve_times: bool,
    /// `-r`. [`parse_exec_command`] refuses it, so requests it builds always have `false`. With
    /// `true`, [`run_sink`] still stores no directories (there is no mkdir in [`SinkFs`]): it
    /// answers each `D` record with a warning, which makes the client skip that directory.
    pub recursive: bool,
}

/// Parses an exec command. Returns `Ok(None)` if the command is not an scp command at all,
/// `Err(msg)` for an scp command we do not support (source mode `-f`, recursive `-r`, unknown
/// options, a missing or ambiguous target); the message is meant for the user's terminal.
///
/// The command is split like a POSIX shell would split it (single quotes, double quotes, backslash
/// escapes), because the OpenSSH client hands it to the remote user's shell and users quote
/// targets with that in mind. Anything that would make a real shell do more than split words
/// (`;`, `|`, `$`, redirections, ...) is refused rather than taken literally.
pub fn parse_exec_command(cmd: &str) -> Result<Option<SinkRequest>, String> {
    let words = match split_shell_words(cmd) {
        Ok(words) => words,
        // An unparsable command only concerns us if it is meant for scp; anything else is for
        // whoever handles other exec requests.
        Err(msg) if cmd.split_whitespace().next().is_some_and(is_scp_program) => return Err(msg),
        Err(_) => return Ok(None),
    };
    let Some((program, args)) = words.split_first() else {
        return Ok(None);
    };
    if !is_scp_program(&program.text) {
        return Ok(None);
    }

    let (mut sink, mut source, mut must_be_dir, mut preserve, mut recursive) =
        (false, false, false, false, false);
    let mut rest = args;
    // getopt semantics: options come first, `--` ends them, the first non-option is an operand.
    while let Some((word, tail)) = rest.split_first() {
        if word.text == "--" {
            rest = tail;
            break;
        }
        let Some(flags) = word.text.strip_prefix('-') else {
            break;
        };
        if flags.is_empty() {
            break; // a lone "-" is an operand
        }
        for flag in flags.chars() {
            match flag {
                't' => sink = true,
                'f' => source = true,
                'd' => must_be_dir = true,
                'p' => preserve = true,
                'r' => recursive = true,
                // Verbosity only affects the remote scp's stderr chatter; we have none.
                'v' | 'q' => {}
                other => return Err(format!("unsupported scp option -{other}")),
            }
        }
        rest = tail;
    }

    if source {
        return Err("downloads over legacy scp are not supported; use sftp".to_string());
    }
    if !sink {
        return Err("unsupported scp command: legacy scp only accepts uploads \
                    (scp -O file host:target); use sftp for anything else"
            .to_string());
    }
    if recursive {
        return Err(
            "recursive scp is not supported; send files one by one or use sftp".to_string(),
        );
    }
    let target = match rest {
        [] => return Err("missing target: scp -t needs the destination path".to_string()),
        [target] => expand_tilde(target)?,
        words => {
            return Err(format!(
                "ambiguous target: {} words where one path was expected; quote a target that \
                 contains spaces, e.g. host:\"'my dir'\"",
                words.len()
            ));
        }
    };
    if target.is_empty() {
        return Err("missing target: the destination path is empty".to_string());
    }
    Ok(Some(SinkRequest {
        target,
        target_must_be_dir: must_be_dir,
        preserve_times: preserve,
        recursive,
    }))
}

/// Storage behind the sink, implemented elsewhere over the jailed filesystem (all calls are
/// synchronous, fast local-disk work).
pub trait SinkFs: Send {
    /// Is `target` (as given on the command line, resolved by the implementor relative to the
    /// user's home) an existing directory?
    fn is_dir(&mut self, target: &str) -> bool;
    /// Starts receiving a file: `path` is the target (if it is a file target) or `target/name` (if
    /// target is a directory) — the sink builds it. `name` is always a single path component (the
    /// sink refuses names containing '/' or equal to "." or ".." with an error reply "invalid file
    /// name" before calling). `mode` holds only permission bits (`& 0o777`). Err(msg) is reported
    /// to the client with \x01 and the sink continues.
    fn begin_file(&mut self, path: &str, mode: u32, size: u64)
    -> Result<Box<dyn SinkFile>, String>;
}

/// One file being received; see [`SinkFs::begin_file`].
pub trait SinkFile: Send {
    /// Appends the next chunk of data (at most 256 KiB).
    fn write(&mut self, data: &[u8]) -> Result<(), String>;
    /// Sets the times sent in the client's `T` record (seconds since the epoch); called before
    /// `commit`, only with `scp -p`.
    fn set_times(&mut self, mtime: u64, atime: u64) -> Result<(), String>;
    /// The whole file was received: make it appear under its real name. Dropping a SinkFile
    /// without commit means abort (the implementor deletes the partial data).
    fn commit(self: Box<Self>) -> Result<(), String>;
}

/// Runs the sink over the channel's byte streams until the client closes its side, and returns
/// the exit status to send: 0 if all went well, 1 if any error was reported (by either side).
///
/// It never hangs on bad input: a truncated stream (EOF mid-file) aborts the file (drop without
/// commit) and returns 1; a malformed record gets a \x02 fatal reply and returns 1; files larger
/// than `max_file_size` are refused before any data is sent. A client that merely stalls is left
/// to the connection's inactivity timeout. File data is read in 256 KiB chunks, never whole.
///
/// All-or-nothing per file: a file is only committed if all its data arrived, every write
/// succeeded, the client ended it with its `\0` and (with `-p`) its times were set; otherwise it
/// is dropped and the client gets a warning naming it.
pub async fn run_sink<R, W>(
    req: &SinkRequest,
    fs: &mut dyn SinkFs,
    reader: R,
    writer: W,
    max_file_size: u64,
) -> u32
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut sink = Sink {
        req,
        fs,
        reader: BufReader::with_capacity(READ_BUFFER, reader),
        writer,
        max_file_size,
        target_is_dir: false,
        had_error: false,
        buf: Vec::new(),
    };
    match sink.run().await {
        Ok(()) => u32::from(sink.had_error),
        Err(Stop::Fatal(why)) => {
            tracing::warn!(target_path = %printable(&req.target), "scp sink: protocol error: {why}");
            // Best effort: the client may already be gone, and we are stopping either way.
            sink.reply(FATAL, &format!("protocol error: {why}"))
                .await
                .ok();
            1
        }
        Err(Stop::Refused(msg)) => {
            tracing::info!("scp sink: refused: {msg}");
            sink.reply(WARNING, &msg).await.ok();
            1
        }
        Err(Stop::Ended(why)) => {
            tracing::info!(target_path = %printable(&req.target), "scp sink: ended early: {why}");
            1
        }
    }
}

/// Reply byte for an error the client reports and survives (it skips the file it was sending).
const WARNING: u8 = 1;
/// Reply byte for an error after which the client gives up.
const FATAL: u8 = 2;

/// Why a session stopped before the client closed its side.
enum Stop {
    /// The peer broke the protocol: send a `\x02` reply, since nothing after this can be trusted
    /// to be in sync.
    Fatal(String),
    /// The request cannot be served at all (e.g. `-d` with a target that is not a directory):
    /// send a `\x01` reply, as OpenSSH does, and stop.
    Refused(String),
    /// The stream ended or failed, or the client gave up: there is nobody to tell.
    Ended(String),
}

/// A parsed `C` (or `D`) record: `C<mode> <size> <name>`.
struct Entry {
    mode: u32,
    size: u64,
    name: Vec<u8>,
}

struct Sink<'a, R, W> {
    req: &'a SinkRequest,
    fs: &'a mut dyn SinkFs,
    reader: BufReader<R>,
    writer: W,
    max_file_size: u64,
    target_is_dir: bool,
    had_error: bool,
    /// The data chunk buffer, allocated once per session on the first non-empty file.
    buf: Vec<u8>,
}

impl<R, W> Sink<'_, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    async fn run(&mut self) -> Result<(), Stop> {
        let target = &self.req.target;
        if target.is_empty() {
            return Err(Stop::Refused("missing target".to_string()));
        }
        // Checked once, like OpenSSH, before the first record.
        self.target_is_dir = self.fs.is_dir(target);
        // A trailing slash says "directory" just as -d does; without this check a missing
        // "dir/" would reach begin_file as a file path.
        let must_be_dir = self.req.target_must_be_dir || target.ends_with('/');
        if must_be_dir && !self.target_is_dir {
            return Err(Stop::Refused(format!(
                "{}: not an existing directory",
                printable(target)
            )));
        }
        // The client waits for this before sending its first record.
        self.ack().await?;

        // Times from a `T` record, for the `C` record that follows it.
        let mut times = None;
        loop {
            let Some(record) = self.read_line().await? else {
                return Ok(()); // the client closed its side between records: done
            };
            let Some((&kind, rest)) = record.split_first() else {
                return Err(Stop::Fatal("unexpected <newline>".to_string()));
            };
            match kind {
                // The client reports its own errors (e.g. an unreadable local file) this way,
                // unsolicited and without expecting an answer; it goes on with the next file.
                WARNING => {
                    self.had_error = true;
                    tracing::debug!("scp sink: client reported: {}", printable_bytes(rest));
                }
                FATAL => {
                    self.had_error = true;
                    tracing::debug!("scp sink: client gave up: {}", printable_bytes(rest));
                    return Ok(());
                }
                // End of a directory. We never enter one, so as in OpenSSH's top-level sink it
                // ends the session.
                b'E' => {
                    self.ack().await?;
                    return Ok(());
                }
                b'T' => {
                    times = Some(parse_times(rest)?);
                    self.ack().await?;
                }
                b'C' => {
                    let entry = parse_entry(rest)?;
                    // A T record describes only the file right after it.
                    let times = times.take();
                    self.receive_file(entry, times).await?;
                }
                b'D' => {
                    let entry = parse_entry(rest)?;
                    times = None;
                    if !self.req.recursive {
                        return Err(Stop::Fatal("received directory without -r".to_string()));
                    }
                    // The client skips the whole directory (it sends neither contents nor `E`).
                    let msg = format!(
                        "{}: directories are not supported; send files one by one or use sftp",
                        printable_bytes(&entry.name)
                    );
                    self.warn(&msg).await?;
                }
                _ => return Err(Stop::Fatal("expected control record".to_string())),
            }
        }
    }

    /// Handles one `C` record: validation, the ack, the data, the client's end-of-data byte and the
    /// final reply. Only stream-level failures are returned as errors; a refused or failed file is
    /// answered with a warning and the session goes on, exactly as the client expects.
    async fn receive_file(&mut self, entry: Entry, times: Option<(u64, u64)>) -> Result<(), Stop> {
        let Some(name) = valid_name(&entry.name) else {
            let msg = format!("invalid file name: {}", printable_bytes(&entry.name));
            return self.warn(&msg).await;
        };
        // Refused before the ack, so the client never sends the data.
        if entry.size > self.max_file_size {
            let msg = format!(
                "{}: file too large ({} bytes; the limit is {} bytes)",
                printable(name),
                entry.size,
                self.max_file_size
            );
            return self.warn(&msg).await;
        }
        let path = if !self.target_is_dir {
            self.req.target.clone()
        } else if self.req.target.ends_with('/') {
            format!("{}{name}", self.req.target)
        } else {
            format!("{}/{name}", self.req.target)
        };
        let file = match self.fs.begin_file(&path, entry.mode, entry.size) {
            Ok(file) => file,
            Err(e) => return self.warn(&format!("{}: {e}", printable(&path))).await,
        };
        // From here on, returning early drops `file`, which aborts it: that is the cleanup for a
        // lost connection.
        self.ack().await?;

        // After a failed write we keep reading (and discarding) the data: the client sends it
        // regardless, and the stream must stay in sync for the next record.
        let mut file: Result<Box<dyn SinkFile>, String> = Ok(file);
        if entry.size > 0 && self.buf.capacity() < DATA_CHUNK {
            self.buf = Vec::with_capacity(DATA_CHUNK);
        }
        let mut remaining = entry.size;
        while remaining > 0 {
            self.buf.clear();
            // `take` bounds the read to this file's data; the Vec's spare capacity bounds it to
            // one chunk.
            let n = (&mut self.reader)
                .take(remaining)
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| Stop::Ended(format!("reading data of {}: {e}", printable(&path))))?;
            if n == 0 {
                return Err(Stop::Ended(format!(
                    "connection closed after {} of {} bytes of {}",
                    entry.size - remaining,
                    entry.size,
                    printable(&path)
                )));
            }
            if let Ok(f) = &mut file
                && let Err(e) = f.write(&self.buf)
            {
                file = Err(e); // drops the file now: its partial data is useless
            }
            remaining = remaining.saturating_sub(n as u64);
        }

        // The client ends the data with `\0`, or with a `\x01` line if reading its local file
        // failed midway (it then sent filler to keep the stream in sync).
        let status = self.read_byte().await?;
        match status {
            0 => {}
            WARNING => {
                let msg = self.read_line().await?.unwrap_or_default();
                drop(file);
                tracing::debug!("scp sink: client reported: {}", printable_bytes(&msg));
                // The client reads exactly one reply after its error; make it say what happened.
                let msg = format!(
                    "{}: not saved: the client reported an error while sending it",
                    printable(&path)
                );
                return self.warn(&msg).await;
            }
            FATAL => {
                let msg = self.read_line().await?.unwrap_or_default();
                self.had_error = true;
                return Err(Stop::Ended(format!(
                    "client gave up sending {}: {}",
                    printable(&path),
                    printable_bytes(&msg)
                )));
            }
            _ => return Err(Stop::Fatal("expected end of file data".to_string())),
        }

        let mut file = match file {
            Ok(file) => file,
            Err(e) => return self.warn(&format!("{}: {e}", printable(&path))).await,
        };
        if let Some((mtime, atime)) = times
            && let Err(e) = file.set_times(mtime, atime)
        {
            // All-or-nothing: a warning must mean "not stored", or the user cannot tell whether
            // sending again is needed.
            drop(file);
            let msg = format!("{}: cannot set times: {e}", printable(&path));
            return self.warn(&msg).await;
        }
        match file.commit() {
            Ok(()) => {
                tracing::info!(path = %printable(&path), size = entry.size, "scp upload stored");
                self.ack().await
            }
            Err(e) => self.warn(&format!("{}: {e}", printable(&path))).await,
        }
    }

    /// Reads one record line without its `\n`; `None` on a clean end of stream before its first
    /// byte. Bounded by [`MAX_RECORD_LEN`] without waiting for a newline that may never come.
    async fn read_line(&mut self) -> Result<Option<Vec<u8>>, Stop> {
        let mut line = Vec::new();
        loop {
            let available = self
                .reader
                .fill_buf()
                .await
                .map_err(|e| Stop::Ended(format!("reading a record: {e}")))?;
            if available.is_empty() {
                if line.is_empty() {
                    return Ok(None);
                }
                return Err(Stop::Ended(
                    "connection closed in the middle of a record".to_string(),
                ));
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let take = newline.unwrap_or(available.len());
            if line.len().saturating_add(take) > MAX_RECORD_LEN {
                return Err(Stop::Fatal(format!(
                    "record longer than {MAX_RECORD_LEN} bytes"
                )));
            }
            line.extend(available.iter().take(take));
            self.reader.consume(take + usize::from(newline.is_some()));
            if newline.is_some() {
                return Ok(Some(line));
            }
        }
    }

    async fn read_byte(&mut self) -> Result<u8, Stop> {
        let available = self
            .reader
            .fill_buf()
            .await
            .map_err(|e| Stop::Ended(format!("reading end of file data: {e}")))?;
        let Some(&byte) = available.first() else {
            return Err(Stop::Ended(
                "connection closed before the end of file data".to_string(),
            ));
        };
        self.reader.consume(1);
        Ok(byte)
    }

    /// "OK": the client waits for this after the start, every record and every file.
    async fn ack(&mut self) -> Result<(), Stop> {
        self.send(&[0]).await
    }

    /// Reports a per-file error; the client prints it, skips the file and goes on, and the exit
    /// status becomes 1.
    async fn warn(&mut self, msg: &str) -> Result<(), Stop> {
        self.had_error = true;
        tracing::info!(target_path = %printable(&self.req.target), "scp sink: {msg}");
        self.reply(WARNING, msg).await
    }

    /// Sends `<level>scp: <msg>\n` (the prefix is what OpenSSH's sink sends, so users see the
    /// familiar "scp: path: reason"). The message is made single-line and short enough for the
    /// client's reply buffer, since an embedded newline or overlong text would desynchronise it.
    async fn reply(&mut self, level: u8, msg: &str) -> Result<(), Stop> {
        let mut line = Vec::with_capacity(MAX_REPLY_LEN + 8);
        line.push(level);
        line.extend_from_slice(b"scp: ");
        let mut len = 0;
        for c in printable(msg).chars() {
            len += c.len_utf8();
            if len > MAX_REPLY_LEN {
                break;
            }
            let mut utf8 = [0; 4];
            line.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
        line.push(b'\n');
        self.send(&line).await
    }

    /// Writes and flushes: the client blocks on every reply, so nothing may linger in a buffer.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let result = async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        }
        .await;
        result.map_err(|e| Stop::Ended(format!("writing a reply: {e}")))
    }
}

/// Parses the rest of a `T` record: `<mtime> <mtime_usec> <atime> <atime_usec>`.
fn parse_times(rest: &[u8]) -> Result<(u64, u64), Stop> {
    let bad = || Stop::Fatal("malformed times record".to_string());
    let mut fields = rest.split(|&b| b == b' ');
    let mut next = || fields.next().and_then(parse_decimal).ok_or_else(bad);
    let (mtime, mtime_usec, atime, atime_usec) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(bad());
    }
    if mtime_usec > 999_999 || atime_usec > 999_999 {
        return Err(Stop::Fatal(
            "times record: microseconds out of range".to_string(),
        ));
    }
    Ok((mtime, atime))
}

/// Parses the rest of a `C` or `D` record: exactly four octal mode digits, a space, a decimal
/// size, a space, and the name (which may itself contain spaces). Anything else is fatal, because
/// after a record we cannot parse we no longer know how many data bytes follow.
fn parse_entry(rest: &[u8]) -> Result<Entry, Stop> {
    let fatal = |why: &str| Stop::Fatal(why.to_string());
    let mut parts = rest.splitn(3, |&b| b == b' ');
    let (Some(mode), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(fatal("malformed file record"));
    };
    if mode.len() != 4 || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return Err(fatal("bad mode"));
    }
    let mode = mode
        .iter()
        .fold(0u32, |acc, &b| (acc << 3) | u32::from(b - b'0'));
    if size.is_empty() || !size.iter().all(u8::is_ascii_digit) {
        return Err(fatal("size not present"));
    }
    // Beyond i64 is out of range for OpenSSH (off_t) as well; no real file is that large.
    let size = parse_decimal(size)
        .filter(|&s| i64::try_from(s).is_ok())
        .ok_or_else(|| fatal("size out of range"))?;
    Ok(Entry {
        // Only permission bits: setuid/setgid/sticky from a client have no business here.
        mode: mode & 0o777,
        size,
        name: name.to_vec(),
    })
}

/// A non-empty run of ASCII digits as u64; `None` if empty, not digits, or overflowing.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The name from a `C` record if it is one plain path component. Beyond what OpenSSH checks
/// ('/', ".", ".."), control characters (NUL included) are refused: no legitimate file has them,
/// and they would end up in logs and terminals. Non-UTF-8 names cannot be handed to [`SinkFs`].
fn valid_name(name: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(name).ok()?;
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control);
    ok.then_some(name)
}

/// `s` with control characters escaped, for logs and replies.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn printable_bytes(bytes: &[u8]) -> String {
    printable(&String::from_utf8_lossy(bytes))
}

fn is_scp_program(word: &str) -> bool {
    word == "scp" || word.ends_with("/scp")
}

/// One shell word; `tilde` if it began with an unquoted `~` (the only case a shell expands).
#[derive(Default)]
struct Word {
    text: String,
    tilde: bool,
}

/// Splits a command line into words like a POSIX shell, for the subset that makes sense in an scp
/// command: blanks separate words; '...' is literal; "..." is literal except for \" \\ \$ \`
/// and backslash-newline; a backslash outside quotes escapes the next character.
fn split_shell_words(cmd: &str) -> Result<Vec<Word>, String> {
    fn unsupported(c: char) -> String {
        format!(
            "the shell syntax {c:?} is not supported in an scp command line; \
             quote the target, e.g. host:\"'my file'\""
        )
    }
    let mut words = Vec::new();
    let mut current: Option<Word> = None;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => words.extend(current.take()),
            '\'' => {
                let word = current.get_or_insert_with(Word::default);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.text.push(ch),
                        None => return Err("unterminated single quote in the command".to_string()),
                    }
                }
            }
            '"' => {
                let word = current.get_or_insert_with(Word::default);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.text.push(ch),
                            Some(ch) => {
                                word.text.push('\\');
                                word.text.push(ch);
                            }
                            None => {
                                return Err("unterminated double quote in the command".to_string());
                            }
                        },
                        // A shell would expand these even inside double quotes.
                        Some(ch @ ('$' | '`')) => return Err(unsupported(ch)),
                        Some(ch) => word.text.push(ch),
                        None => return Err("unterminated double quote in the command".to_string()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {} // line continuation
                Some(ch) => current.get_or_insert_with(Word::default).text.push(ch),
                // sh keeps a trailing backslash literally.
                None => current.get_or_insert_with(Word::default).text.push('\\'),
            },
            // A shell would run, pipe, redirect, substitute or comment here; taking these
            // literally would silently store something the user did not mean.
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '$' | '`' => return Err(unsupported(c)),
            '#' if current.is_none() => return Err(unsupported(c)),
            '~' if current.is_none() => {
                current = Some(Word {
                    text: "~".to_string(),
                    tilde: true,
                });
            }
            _ => current.get_or_insert_with(Word::default).text.push(c),
        }
    }
    words.extend(current.take());
    Ok(words)
}

/// Undoes the shell's tilde expansion: `~` and `~/x` mean the home directory, which is exactly
/// what a relative path means to [`SinkFs`]. `~user` cannot be honoured inside a jail.
fn expand_tilde(word: &Word) -> Result<String, String> {
    if !word.tilde {
        return Ok(word.text.clone());
    }
    match word.text.strip_prefix('~') {
        Some("") => Ok(".".to_string()),
        Some(rest) if rest.starts_with('/') => {
            let rest = rest.trim_start_matches('/');
            Ok(if rest.is_empty() { "." } else { rest }.to_string())
        }
        _ => Err("~user targets are not supported; use a path relative to your home".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Committed {
        path: String,
        data: Vec<u8>,
        times: Option<(u64, u64)>,
    }

    #[derive(Default)]
    struct Log {
        begun: Vec<(String, u32, u64)>,
        committed: Vec<Committed>,
        aborted: Vec<String>,
        largest_write: usize,
    }

    /// In-memory storage that records everything the sink asks of it.
    #[derive(Default)]
    struct MemFs {
        dirs: Vec<String>,
        fail_begin: Option<String>,
        fail_write: Option<String>,
        fail_times: Option<String>,
        log: Arc<Mutex<Log>>,
    }

    impl MemFs {
        fn with_dir(dir: &str) -> Self {
            MemFs {
                dirs: vec![dir.to_string()],
                ..Default::default()
            }
        }
        fn begun(&self) -> Vec<(String, u32, u64)> {
            self.log.lock().unwrap().begun.clone()
        }
        fn committed(&self) -> Vec<Committed> {
            self.log.lock().unwrap().committed.clone()
        }
        fn aborted(&self) -> Vec<String> {
            self.log.lock().unwrap().aborted.clone()
        }
    }

    impl SinkFs for MemFs {
        fn is_dir(&mut self, target: &str) -> bool {
            let target = target.trim_end_matches('/');
            self.dirs.iter().any(|d| d == target)
        }
        fn begin_file(
            &mut self,
            path: &str,
            mode: u32,
            size: u64,
        ) -> Result<Box<dyn SinkFile>, String> {
            self.log
                .lock()
                .unwrap()
                .begun
                .push((path.to_string(), mode, size));
            if let Some(e) = &self.fail_begin {
                return Err(e.clone());
            }
            Ok(Box::new(MemFile {
                path: path.to_string(),
                data: Vec::new(),
                times: None,
                fail_write: self.fail_write.clone(),
                fail_times: self.fail_times.clone(),
                log: self.log.clone(),
                committed: false,
            }))
        }
    }

    struct MemFile {
        path: String,
        data: Vec<u8>,
        times: Option<(u64, u64)>,
        fail_write: Option<String>,
        fail_times: Option<String>,
        log: Arc<Mutex<Log>>,
        committed: bool,
    }

    impl SinkFile for MemFile {
        fn write(&mut self, data: &[u8]) -> Result<(), String> {
            if let Some(e) = &self.fail_write {
                return Err(e.clone());
            }
            let mut log = self.log.lock().unwrap();
            log.largest_write = log.largest_write.max(data.len());
            self.data.extend_from_slice(data);
            Ok(())
        }
        fn set_times(&mut self, mtime: u64, atime: u64) -> Result<(), String> {
            if let Some(e) = &self.fail_times {
                return Err(e.clone());
            }
            self.times = Some((mtime, atime));
            Ok(())
        }
        fn commit(mut self: Box<Self>) -> Result<(), String> {
            self.committed = true;
            self.log.lock().unwrap().committed.push(Committed {
                path: self.path.clone(),
                data: std::mem::take(&mut self.data),
                times: self.times,
            });
            Ok(())
        }
    }

    impl Drop for MemFile {
        fn drop(&mut self) {
            if !self.committed {
                self.log.lock().unwrap().aborted.push(self.path.clone());
            }
        }
    }

    fn req(target: &str) -> SinkRequest {
        SinkRequest {
            target: target.to_string(),
            target_must_be_dir: false,
            preserve_times: false,
            recursive: false,
        }
    }

    /// Feeds `input` as everything the client sends, then closes the client's side; returns the
    /// exit status and everything the sink replied. Fails the test if the sink does not finish.
    async fn drive(req: &SinkRequest, fs: &mut MemFs, input: &[u8], max: u64) -> (u32, Vec<u8>) {
        let (mut client_out, server_in) = tokio::io::duplex(64 * 1024);
        let (server_out, mut client_in) = tokio::io::duplex(64 * 1024);
        let input = input.to_vec();
        let feed = async move {
            // The sink may stop reading early (fatal error); that is not a test failure.
            let _ = client_out.write_all(&input).await;
            drop(client_out);
        };
        let collect = async move {
            let mut out = Vec::new();
            client_in.read_to_end(&mut out).await.unwrap();
            out
        };
        let sink = run_sink(req, fs, server_in, server_out, max);
        let (status, (), out) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(sink, feed, collect)
        })
        .await
        .expect("the sink hung");
        (status, out)
    }

    /// `C` record, data and the client's end-of-data `\0`.
    fn file(mode: &str, name: &str, data: &[u8]) -> Vec<u8> {
        let mut v = format!("C{mode} {} {name}\n", data.len()).into_bytes();
        v.extend_from_slice(data);
        v.push(0);
        v
    }

    fn committed(path: &str, data: &[u8]) -> Committed {
        Committed {
            path: path.to_string(),
            data: data.to_vec(),
            times: None,
        }
    }

    /// Splits the sink's output into its replies: `0` for an ack, otherwise the level and text.
    fn replies(out: &[u8]) -> Vec<String> {
        let mut replies = Vec::new();
        let mut rest = out;
        while let Some((&first, tail)) = rest.split_first() {
            if first == 0 {
                replies.push("ok".to_string());
                rest = tail;
            } else {
                let end = tail
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("unterminated reply");
                let text = String::from_utf8(tail[..end].to_vec()).unwrap();
                replies.push(format!("{first}:{text}"));
                rest = &tail[end + 1..];
            }
        }
        replies
    }

    const MAX: u64 = 1 << 30;

    #[tokio::test]
    async fn single_file_into_directory() {
        let mut fs = MemFs::with_dir("/incoming");
        let (status, out) = drive(
            &req("/incoming/"),
            &mut fs,
            &file("0644", "a.zip", b"hello"),
            MAX,
        )
        .await;
        assert_eq!(status, 0);
        // Initial ready, ack of the C record, ack after the data.
        assert_eq!(out, b"\0\0\0");
        assert_eq!(fs.begun(), vec![("/incoming/a.zip".to_string(), 0o644, 5)]);
        assert_eq!(fs.committed(), vec![committed("/incoming/a.zip", b"hello")]);
        assert!(fs.aborted().is_empty());
    }

    #[tokio::test]
    async fn directory_target_without_trailing_slash() {
        let mut fs = MemFs::with_dir("/incoming");
        let (status, _) = drive(&req("/incoming"), &mut fs, &file("0600", "a", b"x"), MAX).await;
        assert_eq!(status, 0);
        assert_eq!(fs.committed(), vec![committed("/incoming/a", b"x")]);
    }

    #[tokio::test]
    async fn file_target_is_the_file_name() {
        let mut fs = MemFs::default();
        let (status, out) = drive(
            &req("x.zip"),
            &mut fs,
            &file("0644", "local.zip", b"data"),
            MAX,
        )
        .await;
        assert_eq!(status, 0);
        assert_eq!(out, b"\0\0\0");
        assert_eq!(fs.committed(), vec![committed("x.zip", b"data")]);
    }

    #[tokio::test]
    async fn two_files_in_one_session() {
        let mut fs = MemFs::with_dir("dir");
        let mut input = file("0644", "a", b"first");
        input.extend(file("0640", "b", b"second"));
        let mut r = req("dir");
        r.target_must_be_dir = true;
        let (status, out) = drive(&r, &mut fs, &input, MAX).await;
        assert_eq!(status, 0);
        assert_eq!(out, b"\0\0\0\0\0");
        assert_eq!(
            fs.committed(),
            vec![committed("dir/a", b"first"), committed("dir/b", b"second")]
        );
        assert_eq!(fs.begun()[1], ("dir/b".to_string(), 0o640, 6));
    }

    #[tokio::test]
    async fn name_with_spaces() {
        let mut fs = MemFs::with_dir("d");
        let (status, _) = drive(&req("d"), &mut fs, &file("0644", "my file.zip", b"z"), MAX).await;
        assert_eq!(status, 0);
        assert_eq!(fs.committed(), vec![committed("d/my file.zip", b"z")]);
    }

    #[tokio::test]
    async fn preserve_times_apply_to_the_next_file_only() {
        let mut fs = MemFs::with_dir("d");
        let mut input = b"T1700000000 0 1700000001 0\n".to_vec();
        input.extend(file("0644", "a", b"1"));
        input.extend(file("0644", "b", b"2"));
        let mut r = req("d");
        r.preserve_times = true;
        let (status, out) = drive(&r, &mut fs, &input, MAX).await;
        assert_eq!(status, 0);
        // ready, T ack, C ack, data ack, C ack, data ack
        assert_eq!(out, b"\0\0\0\0\0\0");
        let got = fs.committed();
        assert_eq!(got[0].times, Some((1_700_000_000, 1_700_000_001)));
        assert_eq!(got[1].times, None);
    }

    #[tokio::test]
    async fn set_times_failure_aborts_the_file() {
        let mut fs = MemFs::with_dir("d");
        fs.fail_times = Some("read-only".to_string());
        let mut input = b"T1 0 2 0\n".to_vec();
        input.extend(file("0644", "a", b"1"));
        let (status, out) = drive(&req("d"), &mut fs, &input, MAX).await;
        assert_eq!(status, 1);
        assert_eq!(
            replies(&out),
            ["ok", "ok", "ok", "1:scp: d/a: cannot set times: read-only"]
        );
        assert!(fs.committed().is_empty());
        assert_eq!(fs.aborted(), ["d/a"]);
    }

    #[tokio::test]
    async fn must_be_dir_with_non_directory_target_is_refused() {
        let mut fs = MemFs::default();
        let mut r = req("notadir");
        r.target_must_be_dir = true;
        let (status, out) = drive(&r, &mut fs, &file("0644", "a", b"x"), MAX).await;
        assert_eq!(status, 1);
        // Instead of the initial ready byte: the client prints this and exits.
        assert_eq!(replies(&out), ["1:scp: notadir: not an existing directory"]);
        assert!(fs.begun().is_empty());
    }

    #[tokio::test]
    async fn trailing_slash_on_missing_directory_is_refused() {
        let mut fs = MemFs::default();
        let (status, out) = drive(&req("missing/"), &mut fs, &file("0644", "a", b"x"), MAX).await;
        assert_eq!(status, 1);
        assert_eq!(
            replies(&out),
            ["1:scp: missing/: not an existing directory"]
        );
        assert!(fs.begun().is_empty());
    }

    #[tokio::test]
    async fn invalid_names_are_refused_and_the_session_goes_on() {
        for bad in [
            "../x",
            "a/b",
            ".",
            "..",
            "",
            "nul\0byte",
            "tab\there",
            "esc\x1b[2J",
        ] {
            let mut fs = MemFs::with_dir("d");
            // A real client skips the data after a warning, so none is sent for the bad name.
            let mut input = format!("C0644 3 {bad}\n").into_bytes();
            input.extend(file("0644", "ok", b"hi"));
            let (status, out) = drive(&req("d"), &mut fs, &input, MAX).await;
            assert_eq!(status, 1, "{bad:?}");
            let replies = replies(&out);
            assert_eq!(replies.len(), 4, "{bad:?}: {replies:?}");
            assert!(
                replies[1].starts_with("1:scp: invalid file name"),
                "{replies:?}"
            );
            assert_eq!(replies[2..], ["ok", "ok"]);
            assert_eq!(fs.begun(), vec![("d/ok".to_string(), 0o644, 2)], "{bad:?}");
            assert_eq!(fs.committed(), vec![committed("d/ok", b"hi")]);
        }
    }

    #[tokio::test]
    async fn truncated_data_aborts_the_file() {
        let mut fs = MemFs::with_dir("d");
        let (status, out) = drive(&req("d"), &mut fs, b"C0644 10 a\nhello", MAX).await;
        assert_eq!(status, 1);
        assert_eq!(out, b"\0\0");
        assert!(fs.committed().is_empty());
        assert_eq!(fs.aborted(), ["d/a"]);
    }

    #[tokio::test]
    async fn eof_before_end_of_data_byte_aborts_the_file() {
        let mut fs = MemFs::with_dir("d");
        let (status, _) = drive(&req("d"), &mut fs, b"C0644 5 a\nhello", MAX).await;
        assert_eq!(status, 1);
        assert!(fs.committed().is_empty());
        assert_eq!(fs.aborted(), ["d/a"]);
    }

    #[tokio::test]
    async fn eof_in_the_middle_of_a_record() {
        let mut fs = MemFs::with_dir("d");
        let (status, out) = drive(&req("d"), &mut fs, b"C0644 5", MAX).await;
        assert_eq!(status, 1);
        assert_eq!(out, b"\0");
        assert!(fs.begun().is_empty());
    }

    #[tokio::test]
    async fn malformed_records_are_fatal() {
        let cases: &[&[u8]] = &[
            b"X0644 1 a\n",
            b"\n",
            b"C644 1 a\n",
            b"C0684 1 a\n",
            b"C0644 1a a\n",
            b"C0644  a\n",
            b"C0644 1\n",
            b"C0644 -1 a\n",
            b"C0644 18446744073709551616 a\n",
            b"C0644 9223372036854775808 a\n",
            b"T1 0 1\n",
            b"T1 0 1 0 5\n",
            b"T1 1000000 1 0\n",
            b"Tx 0 1 0\n",
            b"T99999999999999999999 0 1 0\n",
            b"D0755 0 sub\n",
        ];
        for &case in cases {
            let mut fs = MemFs::with_dir("d");
            let (status, out) = drive(&req("d"), &mut fs, case, MAX).await;
            assert_eq!(status, 1, "{:?}", String::from_utf8_lossy(case));
            let replies = replies(&out);
            assert_eq!(replies.len(), 2, "{replies:?}");
            assert!(
                replies[1].starts_with("2:scp: protocol error: "),
                "{replies:?}"
            );
            assert!(fs.begun().is_empty());
        }
    }

    #[tokio::test]
    async fn garbage_instead_of_end_of_data_byte_is_fatal() {
        let mut fs = MemFs::with_dir("d");
        let (status, out) = drive(&req("d"), &mut fs, b"C0644 1 a\nxY", MAX).await;
        assert_eq!(status, 1);
        assert_eq!(
            replies(&out),
            [
                "ok",
                "ok",
                "2:scp: protocol error: expected end of file data"
            ]
        );
        assert!(fs.committed().is_empty());
        assert_eq!(fs.aborted(), ["d/a"]);
    }

    #[tokio::test]
    async fn overlong_record_is_fatal_without_waiting_for_a_newline() {
        let mut fs = MemFs::with_dir("d");
        let (mut client_out, server_in) = tokio::io::duplex(64 * 1024);
        let (server_out, mut client_in) = tokio::io::duplex(64 * 1024);
        client_out.write_all(&[b'C'; 10_000]).await.unwrap();
        // client_out stays open: the sink must not wait for more input.
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            run_sink(&req("d"), &mut fs, server_in, server_out, MAX),
        )
        .await
        .expect("the sink hung");
        assert_eq!(status, 1);
        let mut out = Vec::new();
        client_in.read_to_end(&mut out).await.unwrap();
        assert_eq!(
            replies(&out),
            ["ok", "2:scp: protocol error: record longer than 4096 bytes"]
        );
        drop(client_out);
    }

    #[tokio::test]
    async fn oversize_file_is_refused_before_its_data() {
        let mut fs = MemFs::with_dir("d");
        let mut input = b"C0644 11 big\n".to_vec();
        input.extend(file("0644", "small", b"0123456789"));
        let (status, out) = drive(&req("d"), &mut fs, &input, 10).await;
        assert_eq!(status, 1);
        assert_eq!(
            replies(&out),
            [
                "ok",
                "1:scp: big: file too large (11 bytes; the limit is 10 bytes)",
                "ok",
                "ok"
            ]
        );
        assert_eq!(fs.committed(), vec![committed("d/small", b"0123456789")]);
    }

    #[tokio::test]
    async fn zero_byte_file() {
        let mut fs = MemFs::with_dir("d");
        let (status, out) = drive(&req("d"), &mut fs, &file("0644", "empty", b""), MAX).await;
        assert_eq!(status, 0);
        assert_eq!(out, b"\0\0\0");
        assert_eq!(fs.committed(), vec![committed("d/empty", b"")]);
    }

    #[tokio::test]
    async fn only_permission_bits_are_passed_on() {
        let mut fs = MemFs::with_dir("d");
        let (status, _) = drive(&req("d"), &mut fs, &file("4755", "x", b"x"), MAX).await;
        assert_eq!(status, 0);
        assert_eq!(fs.begun(), vec![("d/x".to_string(), 0o755, 1)]);
    }

    #[tokio::test]
    async fn large_file_is_written_in_bounded_chunks() {
        let mut fs = MemFs::with_dir("d");
        let data: Vec<u8> = (0..(3 * DATA_CHUNK + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let (status, _) = drive(&req("d"), &mut fs, &file("0644", "big", &data), MAX).await;
        assert_eq!(status, 0);
        assert_eq!(fs.committed(), vec![committed("d/big", &data)]);
        let largest = fs.log.lock().unwrap().largest_write;
        assert!(largest > 0 && largest <= DATA_CHUNK, "{largest}");
    }

    #[tokio::test]
    async fn client_error_after_data_aborts_the_file() {
        let mut fs = MemFs::with_dir("d");
        // What the client sends when its local read fails midway: filler, then a warning line.
        let mut input = b"C0644 3 a\n\0\0\0\x01scp: a: Input/output error\n".to_vec();
        input.extend(file("0644", "b", b"ok"));
        let (status, out) = drive(&req("d"), &mut fs, &input, MAX).await;
        assert_eq!(status, 1);
        assert_eq!(
            replies(&out),
            [
                "ok",
                "ok",
                "1:scp: d/a: not saved: the client reported an error while sending it",
                "ok",
                "ok"
            ]
        );
        assert_eq!(fs.aborted(), ["d/a"]);
        assert_eq!(fs.committed(), vec![committed("d/b", b"ok")]);
    }

    #[tokio::test]
    async fn client_warning_between_files_is_not_answered() {
        let mut fs = MemFs::with_dir("d");
        let mut input = b"\x01scp: missing.zip: No such file or directory\n".to_vec();
        input.extend(file("0644", "b", b"ok"));
        let (status, out) = drive(&req("d"), &mut fs, &input, MAX).await;
        assert_eq!(status, 1);
        assert_eq!(out, b"\0\0\0");
        assert_eq!(fs.committed(), vec![committed("d/b", b"ok")]);
    }

    #[tokio::test]
    async fn client_fatal_line_ends_the_session() {
        let mut fs = MemFs::with_dir("d");
        let mut input = b"\x02scp: giving up\n".to_vec();
        input.extend(file("0644", "b", b"ok"));
        let (status, out) = drive(&req("d"), &mut fs, &input, MAX).await;
        assert_eq!(status, 1);
        assert_eq!(out, b"\0");
        assert!(fs.begun().is_empty());
    }

    #[tokio::test]
    async fn begin_file_error_is_reported_and_the_session_goes_on() {
        let mut fs = MemFs::with_dir("d");
        fs.fail_begin = Some("quota exceeded\nsecond line".to_string());
        let mut input = b"C0644 5 a\n".to_vec(); // refused: the client sends no data
        input.extend(b"C0644 5 b\n");
        let (status, out) = drive(&req("d"), &mut fs, &input, MAX).await;
        assert_eq!(status, 1);
        assert_eq!(
            replies(&out),
            [
                "ok",
                "1:scp: d/a: quota exceeded\\nsecond line",
                "1:scp: d/b: quota exceeded\\nsecond line"
            ]
        );
        assert_eq!(fs.begun().len(), 2);
    }

    #[tokio::test]
    async fn write_error_keeps_the_stream_in_sync() {
        let mut fs = MemFs::with_dir("d");
        fs.fail_write = Some("disk full".to_string());
        let mut input = file("0644", "a", b"12345");
        input.extend(file("0644", "empty", b""));
        let (status, out) = drive(&req("d"), &mut fs, &input, MAX).await;
        assert_eq!(status, 1);
        assert_eq!(
            replies(&out),
            ["ok", "ok", "1:scp: d/a: disk full", "ok", "ok"]
        );
        assert_eq!(fs.aborted(), ["d/a"]);
        // A zero-byte file needs no write, so it still goes through.
        assert_eq!(fs.committed(), vec![committed("d/empty", b"")]);
    }

    #[tokio::test]
    async fn end_record_ends_the_session() {
        let mut fs = MemFs::with_dir("d");
        let mut input = b"E\n".to_vec();
        input.extend(file("0644", "a", b"x"));
        let (status, out) = drive(&req("d"), &mut fs, &input, MAX).await;
        assert_eq!(status, 0);
        assert_eq!(out, b"\0\0");
        assert!(fs.begun().is_empty());
    }

    #[tokio::test]
    async fn directory_with_recursive_set_is_skipped_with_a_warning() {
        let mut fs = MemFs::with_dir("d");
        let mut r = req("d");
        r.recursive = true;
        let mut input = b"D0755 0 sub\n".to_vec();
        input.extend(file("0644", "a", b"x"));
        let (status, out) = drive(&r, &mut fs, &input, MAX).await;
        assert_eq!(status, 1);
        assert_eq!(
            replies(&out),
            [
                "ok",
                "1:scp: sub: directories are not supported; send files one by one or use sftp",
                "ok",
                "ok"
            ]
        );
        assert_eq!(fs.committed(), vec![committed("d/a", b"x")]);
    }

    #[tokio::test]
    async fn empty_session() {
        let mut fs = MemFs::with_dir("d");
        let (status, out) = drive(&req("d"), &mut fs, b"", MAX).await;
        assert_eq!(status, 0);
        assert_eq!(out, b"\0");
    }

    #[test]
    fn sink_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let mut fs = MemFs::default();
        let (a, b) = tokio::io::duplex(16);
        let r = req("d");
        let fut = run_sink(&r, &mut fs, a, b, MAX);
        assert_send(&fut);
    }

    fn parsed(cmd: &str) -> SinkRequest {
        parse_exec_command(cmd).unwrap().unwrap()
    }

    #[test]
    fn parse_openssh_command_lines() {
        assert_eq!(parsed("scp -t /incoming/"), req("/incoming/"));
        assert_eq!(parsed("scp -t -- ."), req("."));
        assert_eq!(parsed("scp -t -- -weird"), req("-weird"));
        assert_eq!(parsed("/usr/bin/scp -t x"), req("x"));
        let r = parsed("scp -v -d -t /incoming");
        assert!(r.target_must_be_dir && !r.preserve_times && !r.recursive);
        assert_eq!(r.target, "/incoming");
        let r = parsed("scp -p -t x.zip");
        assert!(r.preserve_times && !r.target_must_be_dir);
        let r = parsed("scp -pdt  dir");
        assert!(r.preserve_times && r.target_must_be_dir);
        assert_eq!(r.target, "dir");
    }

    #[test]
    fn parse_quoted_targets() {
        assert_eq!(parsed("scp -t 'dir with space'").target, "dir with space");
        assert_eq!(parsed(r"scp -t dir\ with\ space").target, "dir with space");
        assert_eq!(parsed(r#"scp -t "a \"b\" \$c""#).target, r#"a "b" $c"#);
        assert_eq!(parsed(r#"scp -t "a\b""#).target, r"a\b");
        assert_eq!(parsed(r"scp -t 'it'\''s'").target, "it's");
        assert_eq!(parsed("scp -t '~/x'").target, "~/x");
        assert_eq!(parsed("scp -t ~").target, ".");
        assert_eq!(parsed("scp -t ~/").target, ".");
        assert_eq!(parsed("scp -t ~/incoming/").target, "incoming/");
        assert_eq!(parsed("scp -t a~b").target, "a~b");
    }

    #[test]
    fn parse_refusals() {
        let err = |cmd: &str| parse_exec_command(cmd).unwrap_err();
        assert_eq!(
            err("scp -f /x"),
            "downloads over legacy scp are not supported; use sftp"
        );
        assert_eq!(
            err("scp -v -r -t /incoming"),
            "recursive scp is not supported; send files one by one or use sftp"
        );
        assert_eq!(
            err("scp -r -f x"),
            "downloads over legacy scp are not supported; use sftp"
        );
        assert_eq!(err("scp -x -t a"), "unsupported scp option -x");
        assert!(err("scp -t").starts_with("missing target"));
        assert!(err("scp -t ''").starts_with("missing target"));
        assert!(err("scp -t dir with space").starts_with("ambiguous target: 3 words"));
        assert!(err("scp a b").starts_with("unsupported scp command"));
        assert!(err("scp").starts_with("unsupported scp command"));
        assert!(err("scp -t 'unterminated").contains("unterminated"));
        assert!(err("scp -t x; rm -rf /").contains("';'"));
        assert!(err("scp -t $(id)").contains("'$'"));
        assert!(err("scp -t \"`id`\"").contains("'`'"));
        assert!(err("scp -t x > y").contains("'>'"));
        assert!(err("scp -t ~root/x").contains("~user"));
    }

    #[test]
    fn parse_non_scp_commands() {
        for cmd in [
            "",
            "   ",
            "ls -l",
            "rsync --server -e.LsfxC . /x",
            "scpx -t x",
            "echo 'unterminated",
            "sftp-server",
            "internal-sftp",
        ] {
            assert_eq!(parse_exec_command(cmd), Ok(None), "{cmd:?}");
        }
    }
}
