//! Console sign-in: sessions in memory (a restart signs everyone out), a CSRF token per
//! session, bearer tokens for scripts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{COOKIE, HOST, ORIGIN};
use http::Request;
use subtle::ConstantTimeEq as _;

/// The session cookie's name.
const COOKIE_NAME: &str = "callhook_console";
/// How long a session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held (the oldest go first).
const MAX_SESSIONS: usize = 1000;
/// The `Set-Cookie` that signs out.
pub const EXPIRED_COOKIE: &str = "callhook_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0";

/// Who a request is, once let in.
pub struct Access {
    /// The CSRF token forms must carry.
    pub csrf: String,
    /// Signed in by cookie (forms need the CSRF token); `false` for a bearer token or an open
    /// loopback console without a token.
    pub by_cookie: bool,
}

struct Session {
    csrf: String,
    created: Instant,
}

/// The sessions of the console.
pub struct Sessions {
    token: Option<Arc<str>>,
    /// The CSRF token of an open (token-less, loopback) console.
    open_csrf: String,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Returns the session store; `token` `None` leaves the console open (loopback only).
    pub fn new(token: Option<Arc<str>>) -> std::io::Result<Sessions> {
        Ok(Sessions {
            token,
            open_csrf: random_hex()?,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the request's access, or `None` when it must sign in.
    pub fn check<B>(&self, request: &Request<B>) -> Option<Access> {
        let Some(token) = &self.token else {
            return Some(Access {
                csrf: self.open_csrf.clone(),
                by_cookie: true,
            });
        };
        if callhook_ingest::tap::bearer_matches(request, token) {
            return Some(Access {
                csrf: String::new(),
                by_cookie: false,
            });
        }
        let id = session_cookie(request)?;
        let sessions = self.lock();
        let session = sessions.get(id)?;
        (session.created.elapsed() < SESSION_LIFETIME).then(|| Access {
            csrf: session.csrf.clone(),
            by_cookie: true,
        })
    }

    /// Checks a sign-in; returns the `Set-Cookie` value of a new session, `None` when wrong.
    pub fn sign_in(&self, presented: &str) -> std::io::Result<Option<String>> {
        let Some(token) = &self.token else {
            // Open console: nothing to check.
            return Ok(Some(EXPIRED_COOKIE.to_owned()));
        };
        if !constant_time_eq(presented, token) {
            tracing::warn!("console sign-in refused: wrong token");
            return Ok(None);
        }
        let id = random_hex()?;
        let session = Session {
            csrf: random_hex()?,
            created: Instant::now(),
        };
        let mut sessions = self.lock();
        sessions.retain(|_, session| session.created.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, session)| session.created)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), session);
        Ok(Some(format!(
            "{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_LIFETIME.as_secs()
        )))
    }

    /// Ends the session whose CSRF token is `csrf`.
    pub fn sign_out(&self, csrf: &str) {
        self.lock().retain(|_, session| session.csrf != csrf);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn session_cookie<B>(request: &Request<B>) -> Option<&str> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
}

/// Returns `false` for a request whose `Origin` names another host than its `Host` (a
/// cross-site form post); a request without `Origin` passes (the CSRF token still applies).
pub fn same_origin<B>(request: &Request<B>) -> bool {
    let Some(origin) = request.headers().get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host == host
}

/// Compares two secrets in constant time (for equal lengths).
pub fn constant_time_eq(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// 32 random bytes from the kernel, as hex.
fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    let mut file = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut file, &mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;

    #[test]
    fn test_sign_in_cookie_and_bearer() {
        let sessions = Sessions::new(Some(Arc::from("0123456789abcdef"))).unwrap();
        let anonymous = Request::get("/").body(()).unwrap();
        assert!(sessions.check(&anonymous).is_none());
        assert!(sessions.sign_in("wrong").unwrap().is_none());
        let cookie = sessions.sign_in("0123456789abcdef").unwrap().unwrap();
        let pair = cookie.split(';').next().unwrap();
        let signed_in = Request::get("/").header(COOKIE, pair).body(()).unwrap();
        let access = sessions.check(&signed_in).unwrap();
        assert!(access.by_cookie && access.csrf.len() == 64);
        let bearer = Request::get("/")
            .header(AUTHORIZATION, "Bearer 0123456789abcdef")
            .body(())
            .unwrap();
        assert!(!sessions.check(&bearer).unwrap().by_cookie);
        sessions.sign_out(&access.csrf);
        assert!(sessions.check(&signed_in).is_none());
    }

    #[test]
    fn test_same_origin() {
        let post = |origin: Option<&str>| {
            let mut builder = Request::post("/x").header(HOST, "127.0.0.1:9465");
            if let Some(origin) = origin {
                builder = builder.header(ORIGIN, origin);
            }
            builder.body(()).unwrap()
        };
        assert!(same_origin(&post(None)));
        assert!(same_origin(&post(Some("http://127.0.0.1:9465"))));
        assert!(!same_origin(&post(Some("http://evil.example"))));
    }
}
