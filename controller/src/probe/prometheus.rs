//! A Prometheus probe: an instant query (`/api/v1/query`), every series it returns
//! compared with `expect`. No series is a failure: a query that matches nothing says
//! nothing about the system (a typo, a scrape that stopped).

use super::{ProbeError, bad, http::Http};

#[derive(Debug, Clone)]
pub struct Prometheus {
    pub query: String,
    pub expect: String,
    op: Op,
    value: f64,
    http: Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Self::Lt => a < b,
            Self::Le => a <= b,
            Self::Gt => a > b,
            Self::Ge => a >= b,
            #[expect(clippy::float_cmp, reason = "== 1 on a PromQL value is what the user wrote")]
            Self::Eq => a == b,
            #[expect(clippy::float_cmp, reason = "as above")]
            Self::Ne => a != b,
        }
    }
}

fn comparison(s: &str) -> Result<(Op, f64), ProbeError> {
    let s = s.trim();
    let ops = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let (op, rest) =
        ops.iter().find_map(|(t, op)| s.strip_prefix(t).map(|r| (*op, r))).ok_or_else(|| {
            bad("expect", format!("{s:?} is not a comparison: < 0.05, >= 1, == 0, != 0"))
        })?;
    let v: f64 = rest
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| bad("expect", format!("{s:?}: {:?} is not a number", rest.trim())))?;
    Ok((op, v))
}

/// The query as a URL's query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    pub fn new(url: &str, query: &str, expect: &str) -> Result<Self, ProbeError> {
        let (op, value) = comparison(expect)?;
        if query.trim().is_empty() || query.len() > 4096 {
            return Err(bad("query", "a PromQL expression of at most 4096 bytes"));
        }
        let base = url.trim_end_matches('/');
        let http = Http::new(
            &format!("{base}/api/v1/query?query={}", encode(query)),
            "GET",
            &[],
            "",
            "2xx",
            None,
            None,
            false,
        )?;
        Ok(Self { query: query.to_owned(), expect: expect.trim().to_owned(), op, value, http })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.http.addr()
    }

    pub async fn check(&self) -> Result<String, String> {
        let (code, body) = self.http.fetch().await?;
        let values = values(code, &body)?;
        let mut seen = Vec::new();
        for (labels, v) in &values {
            if !self.op.holds(*v, self.value) {
                return Err(format!("{labels}{v} is not {}", self.expect));
            }
            seen.push(format!("{labels}{v}"));
        }
        Ok(seen.join(", "))
    }
}

/// The values of an answer: (`{labels} `, value) per series, or why there are none.
fn values(code: u16, body: &[u8]) -> Result<Vec<(String, f64)>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        status: String,
        #[serde(default)]
        error: String,
        #[serde(default)]
        data: Option<Data>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Data {
        result_type: String,
        result: serde_json::Value,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("status {code}: not a Prometheus answer ({e})"))?;
    if a.status != "success" {
        return Err(format!("status {code}: query failed: {}", a.error));
    }
    let data = a.data.ok_or_else(|| "no data in the answer".to_owned())?;
    let number = |v: &serde_json::Value| -> Result<f64, String> {
        v.get(1)
            .and_then(serde_json::Value::as_str)
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| format!("a sample that is not [time, \"value\"]: {v}"))
    };
    let out = match data.result_type.as_str() {
        "scalar" => vec![(String::new(), number(&data.result)?)],
        "vector" => data
            .result
            .as_array()
            .ok_or("a vector that is not a list")?
            .iter()
            .take(100)
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .filter(|m| !m.is_empty())
                    .map(|m| {
                        let l: Vec<String> = m
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect();
                        format!("{{{}}} ", l.join(","))
                    })
                    .unwrap_or_default();
                Ok((labels, number(&s["value"])?))
            })
            .collect::<Result<Vec<_>, String>>()?,
        other => {
            return Err(format!("a {other} answer; the probe takes an instant vector or a scalar"));
        }
    };
    if out.is_empty() {
        return Err("the query returned no series".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_and_judged() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"app"},"value":[1.5,"0"]}]}}"#;
        assert_eq!(values(200, v).unwrap(), vec![("{job=app} ".to_owned(), 0.0)]);
        let s = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"0.25"]}}"#;
        assert_eq!(values(200, s).unwrap(), vec![(String::new(), 0.25)]);
        let none = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(values(200, none).unwrap_err().contains("no series"));
        let failed = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(values(400, failed).unwrap_err().contains("parse error"));
        assert!(values(200, b"<html>").unwrap_err().contains("not a Prometheus answer"));
        let (op, v) = comparison("<= 0.05").unwrap();
        assert!(op.holds(0.05, v) && !op.holds(0.06, v));
        assert!(
            comparison("~ 1").is_err() && comparison("< NaN").is_err() && comparison("<").is_err()
        );
        assert_eq!(encode("rate(x{a=\"b\"}[1m])"), "rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29");
    }
}
