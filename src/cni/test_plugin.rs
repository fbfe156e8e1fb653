//! A fake delegate for unit tests: a shell script that records each call (command, env,
//! stdin) and answers success, or the error it was told to give.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub struct FakePlugin {
    dir: tempfile::TempDir,
}

/// One recorded call.
#[derive(Debug)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub ifname: String,
    pub stdin: Value,
}

impl FakePlugin {
    pub fn new(name: &str) -> FakePlugin {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let script = format!(
            "#!/bin/sh\nin=$(cat)\nprintf '%s\\t%s\\t%s\\t%s\\n' \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \"$CNI_IFNAME\" \
             \"$(echo \"$in\" | tr -d '\\n\\t')\" >> {d}/calls\nif [ -f {d}/fail ]; then cat {d}/fail; exit 1; fi\n"
        );
        let path = dir.path().join(name);
        std::fs::write(&path, script).expect("write fake plugin");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod fake plugin");
        FakePlugin { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `CNI_PATH` holding only this plugin.
    pub fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// From now on every call fails with this CNI error.
    pub fn fail_with(&self, code: u32, msg: &str) {
        let err = serde_json::json!({"cniVersion": "1.1.0", "code": code, "msg": msg});
        std::fs::write(self.dir.path().join("fail"), err.to_string()).expect("write fail");
    }

    pub fn calls(&self) -> Vec<Call> {
        let text = std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, '\t').collect();
                Call {
                    command: f[0].into(),
                    container_id: f[1].into(),
                    ifname: f[2].into(),
                    stdin: serde_json::from_str(f.get(3).copied().unwrap_or("null")).unwrap_or(Value::Null),
                }
            })
            .collect()
    }
}
