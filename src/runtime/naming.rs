//! The name a stored image gets in a runtime.

/// The name an image from the store gets in a runtime: the store ref itself when it
/// is a valid, fully qualified docker reference (a registry host, lowercase path,
/// a tag; `:latest` is added when there is none and any `@digest` is dropped, since
/// `docker load` tags cannot carry one), else `localhost/<sanitized>:<tag>`, so a
/// local name can never be taken for a Docker Hub image (`fixture` becomes
/// `localhost/fixture:latest`, `My App:v1` becomes `localhost/my-app:v1`).
pub fn runtime_name(store_ref: &str) -> String {
    let without_digest = store_ref.split('@').next().unwrap_or_default();
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match without_digest[last_slash..].rfind(':') {
        Some(i) => (
            &without_digest[..last_slash + i],
            &without_digest[last_slash + i + 1..],
        ),
        None => (without_digest, "latest"),
    };
    let tag = sanitize_tag(tag);
    if let Some((domain, path)) = name.split_once('/') {
        if is_domain(domain) && path.split('/').all(is_path_component) && name.len() <= 255 {
            return format!("{name}:{tag}");
        }
    }
    let components: Vec<String> = name
        .split('/')
        .map(sanitize_component)
        .filter(|c| !c.is_empty())
        .collect();
    let path = if components.is_empty() {
        "image".to_string()
    } else {
        components.join("/")
    };
    format!("localhost/{path}:{tag}")
}

/// A registry host as docker's grammar has it: `localhost`, or a name with a dot,
/// or any host with a port.
fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    port_ok && labels_ok && (host == "localhost" || host.contains('.') || port.is_some())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, docker's path component.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn sanitize_component(component: &str) -> String {
    let lower = component.to_ascii_lowercase();
    if is_path_component(&lower) {
        return lower;
    }
    let separator = |c: char| matches!(c, '.' | '_' | '-');
    let mapped: String = lower
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || separator(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(separator);
    if is_path_component(trimmed) {
        return trimmed.to_string();
    }
    let dashed: String = trimmed
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    dashed
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn sanitize_tag(tag: &str) -> String {
    let mut mapped: String = tag
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    if mapped.is_empty() || mapped.starts_with(['.', '-']) {
        mapped.insert(0, '_');
    }
    mapped.truncate(128);
    mapped
}

#[cfg(test)]
mod tests {
    use super::runtime_name;

    #[test]
    fn qualified_refs_keep_their_name_and_others_go_under_localhost() {
        for (store_ref, expected) in [
            ("127.0.0.1:5000/tools/a:1", "127.0.0.1:5000/tools/a:1"),
            (
                "docker.io/library/alpine:3.19",
                "docker.io/library/alpine:3.19",
            ),
            ("localhost/x", "localhost/x:latest"),
            (
                "registry.example/a/b:1@sha256:abcd",
                "registry.example/a/b:1",
            ),
            ("fixture", "localhost/fixture:latest"),
            ("tools/a:1", "localhost/tools/a:1"),
            ("My App:v1", "localhost/my-app:v1"),
            (
                "127.0.0.1:5000/Tools/a:1",
                "localhost/127.0.0.1-5000/tools/a:1",
            ),
            ("UPPER/Case", "localhost/upper/case:latest"),
            ("a..b:-x", "localhost/a--b:_-x"),
            ("!!!", "localhost/image:latest"),
        ] {
            assert_eq!(runtime_name(store_ref), expected, "{store_ref}");
        }
    }
}
