//! The deployment manifests and examples, checked for what matters to an operator: they
//! parse, they are the kinds the README applies, the DaemonSets mount exactly what the code
//! reads and writes, and RBAC grants exactly what the code calls. The RBAC sets are asserted
//! by equality, so a new API call in the code fails here until the manifest grants it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use clap::Parser;
use kactus::install::default_network::{check_cni_config, is_kactus_config};
use kactus::install::{InstallArgs, UninstallArgs};
use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every YAML document of a file, as JSON values.
fn docs(rel: &str) -> Vec<Value> {
    let path = repo(rel);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("parse {rel}: {e}"))
}

fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(repo(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    files.sort();
    files
}

fn one(rel: &str, kind: &str) -> Value {
    let mut found: Vec<Value> = docs(rel).into_iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{rel}: expected one {kind}");
    found.remove(0)
}

/// The object of `kind` named `name` in a file.
fn named(rel: &str, kind: &str, name: &str) -> Value {
    let mut found: Vec<Value> =
        docs(rel).into_iter().filter(|d| d["kind"] == kind && d["metadata"]["name"] == name).collect();
    assert_eq!(found.len(), 1, "{rel}: expected one {kind} {name}");
    found.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

#[test]
fn every_yaml_parses_and_has_the_expected_kinds() {
    let expected: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::from([
        ("manifests/network-crd.yaml", vec![("apiextensions.k8s.io/v1", "CustomResourceDefinition")]),
        ("manifests/sliceclaim-crd.yaml", vec![("apiextensions.k8s.io/v1", "CustomResourceDefinition")]),
        ("manifests/multi-networkpolicy-crd.yaml", vec![("apiextensions.k8s.io/v1", "CustomResourceDefinition")]),
        (
            "manifests/kactus-serviceaccount-and-rbac.yaml",
            vec![
                ("v1", "ServiceAccount"),
                ("rbac.authorization.k8s.io/v1", "ClusterRole"),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
                ("v1", "ServiceAccount"),
                ("rbac.authorization.k8s.io/v1", "Role"),
                ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            ],
        ),
        (
            "manifests/podagent-serviceaccount-and-rbac.yaml",
            vec![
                ("v1", "ServiceAccount"),
                ("rbac.authorization.k8s.io/v1", "ClusterRole"),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            ],
        ),
        ("manifests/kactus-ds.yaml", vec![("apps/v1", "DaemonSet")]),
        ("manifests/kactus-uninstall.yaml", vec![("apps/v1", "DaemonSet")]),
        ("manifests/podagent-ds.yaml", vec![("apps/v1", "DaemonSet")]),
        (
            "manifests/endpoints-controller.yaml",
            vec![
                ("v1", "ServiceAccount"),
                ("rbac.authorization.k8s.io/v1", "ClusterRole"),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
                ("rbac.authorization.k8s.io/v1", "Role"),
                ("rbac.authorization.k8s.io/v1", "RoleBinding"),
                ("apps/v1", "Deployment"),
                ("v1", "Service"),
                ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
            ],
        ),
        ("examples/app1.yaml", vec![("apps/v1", "Deployment")]),
        ("examples/app2.yaml", vec![("apps/v1", "Deployment")]),
        ("examples/green-net.yaml", vec![("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition")]),
        ("examples/blue-net.yaml", vec![("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition")]),
        ("examples/data-net.yaml", vec![("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition")]),
        ("examples/mp1-net.yaml", vec![("v1", "Namespace"), ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition")]),
        ("examples/mp1-service.yaml", vec![("apps/v1", "Deployment"), ("v1", "Service")]),
        ("examples/mp1-policy.yaml", vec![("k8s.cni.cncf.io/v1beta1", "MultiNetworkPolicy")]),
        ("examples/macvlan100-net.yaml", vec![("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition")]),
        ("examples/macvlan100-pod.yaml", vec![("v1", "Pod")]),
        (
            "examples/node-local-net.yaml",
            vec![
                ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"),
                ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"),
            ],
        ),
        ("examples/sriov-net.yaml", vec![("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition")]),
        ("examples/sriov-pod.yaml", vec![("v1", "Pod")]),
    ]);
    let mut all = yaml_files("manifests");
    all.extend(yaml_files("examples"));
    all.sort();
    let listed: Vec<String> = expected.keys().map(|k| k.to_string()).collect();
    assert_eq!(all, listed, "a YAML file was added or removed: list it here");
    for (file, kinds) in expected {
        let got: Vec<(String, String)> = docs(file)
            .iter()
            .map(|d| {
                let name = &d["metadata"]["name"];
                assert!(name.is_string(), "{file}: object without metadata.name");
                (d["apiVersion"].as_str().unwrap().into(), d["kind"].as_str().unwrap().into())
            })
            .collect();
        let want: Vec<(String, String)> = kinds.iter().map(|(a, k)| (a.to_string(), k.to_string())).collect();
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn namespaced_manifests_live_in_kube_system() {
    for file in yaml_files("manifests") {
        for d in docs(&file) {
            let kind = d["kind"].as_str().unwrap();
            let cluster_scoped = matches!(
                kind,
                "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding" | "MutatingWebhookConfiguration"
            );
            if !cluster_scoped {
                assert_eq!(d["metadata"]["namespace"], "kube-system", "{file}: {kind}");
            }
        }
    }
}

/// The node-local example NADs are valid node-local configs (the seed one with its template
/// from examples/node-local/ in place of /etc/cni/node-local).
#[test]
fn the_node_local_examples_pass_node_locals_parser() {
    let nads = example_nads();
    for name in ["slices", "seed"] {
        let mut config = nad_config(&nads[name]);
        config["ipam"]["templateDir"] = repo("examples/node-local").display().to_string().into();
        let parsed = kactus::ipam::Config::parse(config.to_string().as_bytes(), &Default::default());
        assert_eq!(
            parsed.unwrap_or_else(|e| panic!("{name}: {e}")).network,
            if name == "seed" { "default" } else { name }
        );
    }
}

/// The installer copies node-local from beside the running kactus: the image has both there.
#[test]
fn node_local_ships_beside_kactus_in_the_image() {
    let (binaries, entrypoint) = dockerfile_image();
    assert_eq!(entrypoint[0], "/usr/local/bin/kactus");
    for bin in ["usr/local/bin/kactus", "usr/local/bin/node-local"] {
        assert!(binaries.contains(bin), "{bin} is not in {binaries:?}");
    }
}

#[test]
fn the_slice_claim_crd_is_what_node_local_writes() {
    let crd = one("manifests/sliceclaim-crd.yaml", "CustomResourceDefinition");
    let spec = &crd["spec"];
    let (group, version) = kactus::ipam::claims::API_VERSION.split_once('/').unwrap();
    assert_eq!(crd["metadata"]["name"], format!("sliceclaims.{group}"));
    assert_eq!((spec["group"].as_str(), spec["scope"].as_str()), (Some(group), Some("Cluster")));
    assert_eq!(spec["names"]["kind"], kactus::ipam::claims::KIND);
    assert_eq!(spec["versions"][0]["name"], version);
    let schema = &spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let fields: BTreeSet<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let claim = serde_json::to_value(kactus::ipam::claims::SliceClaimSpec::default()).unwrap();
    let written: BTreeSet<&str> = claim.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, written, "the schema has exactly the fields node-local writes");
    // The test apiserver serves it the same way.
    let served =
        kactus_testapi::resources::by_kind(kactus::ipam::claims::API_VERSION, kactus::ipam::claims::KIND).unwrap();
    assert_eq!((served.resource, served.namespaced()), ("sliceclaims", false));
}

/// The oldest Kubernetes README supports (1.20, where the real-cluster e2e runs) refuses a CRD
/// schema holding a field it does not know; CEL rules (`x-kubernetes-validations`) came in 1.25.
#[test]
fn crds_use_no_schema_field_newer_than_the_oldest_supported_kubernetes() {
    fn find(v: &Value, path: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "x-kubernetes-validations" {
                        out.push(format!("{path}.{k}"));
                    }
                    find(v, format!("{path}.{k}"), out);
                }
            }
            Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| find(v, format!("{path}[{i}]"), out)),
            _ => {}
        }
    }
    for file in
        ["manifests/network-crd.yaml", "manifests/sliceclaim-crd.yaml", "manifests/multi-networkpolicy-crd.yaml"]
    {
        let mut found = Vec::new();
        find(&one(file, "CustomResourceDefinition"), String::new(), &mut found);
        assert!(found.is_empty(), "{file}: Kubernetes 1.20-1.24 refuse {found:?}");
    }
}

#[test]
fn the_crd_is_the_npwg_network_attachment_definition() {
    let crd = one("manifests/network-crd.yaml", "CustomResourceDefinition");
    let spec = &crd["spec"];
    assert_eq!(crd["metadata"]["name"], "network-attachment-definitions.k8s.cni.cncf.io");
    assert_eq!(spec["group"], "k8s.cni.cncf.io");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["plural"], "network-attachment-definitions");
    assert_eq!(spec["names"]["kind"], "NetworkAttachmentDefinition");
    assert_eq!(spec["names"]["shortNames"], serde_json::json!(["net-attach-def"]));
    let versions = spec["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["name"], "v1");
    assert_eq!(versions[0]["served"], true);
    assert_eq!(versions[0]["storage"], true);
    let schema = &versions[0]["schema"]["openAPIV3Schema"];
    assert_eq!(schema["properties"]["spec"]["properties"]["config"]["type"], "string");
}

/// The same CRD as the Network Plumbing Working Group's (so applying ours over theirs keeps
/// every object), serving the version kactus's model reads, with NetworkPolicy's spec and
/// `endPort` (as multi-networkpolicy-nftables accepts on v1beta1).
#[test]
fn the_multi_network_policy_crd_is_npwgs_with_end_port() {
    use k8s_openapi::Resource;
    use kactus::policy::MultiNetworkPolicy;
    let crd = one("manifests/multi-networkpolicy-crd.yaml", "CustomResourceDefinition");
    let spec = &crd["spec"];
    assert_eq!(
        crd["metadata"]["name"],
        format!("{}.{}", MultiNetworkPolicy::URL_PATH_SEGMENT, MultiNetworkPolicy::GROUP)
    );
    assert_eq!((spec["group"].as_str(), spec["scope"].as_str()), (Some(MultiNetworkPolicy::GROUP), Some("Namespaced")));
    assert_eq!(spec["names"]["plural"], "multi-networkpolicies");
    assert_eq!(spec["names"]["singular"], "multi-networkpolicy");
    assert_eq!(spec["names"]["kind"], MultiNetworkPolicy::KIND);
    assert_eq!(spec["names"]["shortNames"], serde_json::json!(["multi-policy"]));
    let versions = spec["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    let v = &versions[0];
    assert_eq!(
        (v["name"].as_str(), &v["served"], &v["storage"]),
        (Some(MultiNetworkPolicy::VERSION), &Value::Bool(true), &Value::Bool(true))
    );
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let keys = |v: &Value| v["properties"].as_object().unwrap().keys().cloned().collect::<BTreeSet<String>>();
    assert_eq!(keys(spec), ["egress", "ingress", "podSelector", "policyTypes"].map(String::from).into());
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        let rule = &spec["properties"][dir]["items"];
        assert_eq!(keys(rule), ["ports", peers].map(String::from).into());
        assert_eq!(
            keys(&rule["properties"]["ports"]["items"]),
            ["endPort", "port", "protocol"].map(String::from).into()
        );
        let peer = &rule["properties"][peers]["items"];
        assert_eq!(keys(peer), ["ipBlock", "namespaceSelector", "podSelector"].map(String::from).into());
        assert_eq!(keys(&peer["properties"]["ipBlock"]), ["cidr", "except"].map(String::from).into());
    }
}

/// README's example policy means what its comment says for the seeds' hello pod on mp1.
#[test]
fn the_example_policy_governs_hellos_mp1_device_only() {
    use kactus::policy::{compile, Cluster, MultiNetworkPolicy, PodView};
    let policy: MultiNetworkPolicy =
        serde_json::from_value(one("examples/mp1-policy.yaml", "MultiNetworkPolicy")).unwrap();
    let deployment = one("examples/mp1-service.yaml", "Deployment");
    let mut pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(deployment["spec"]["template"].clone()).unwrap();
    pod.metadata.namespace = Some("mep".into());
    let attached = r#"[{"name": "mep/mp1", "interface": "netc890d403fb27", "ips": ["200.1.1.6/24"]}]"#;
    pod.status = Some(
        serde_json::from_value(serde_json::json!({"conditions": [
        {"type": kactus::policy::pod::ATTACHMENTS_CONDITION, "status": "True", "message": attached}]}))
        .unwrap(),
    );
    let hello = PodView::from_pod(&pod);
    let namespaces = BTreeMap::from([("mep".to_string(), BTreeMap::new())]);
    let pods = [hello.clone()];
    let compiled = compile(&Cluster { policies: &[policy], pods: &pods, namespaces: &namespaces }, &hello);
    assert!(compiled.problems.is_empty(), "{:?}", compiled.problems);
    assert_eq!(compiled.devices.len(), 1);
    assert_eq!(
        (compiled.devices[0].device.as_str(), compiled.devices[0].ingress.as_slice()),
        ("netc890d403fb27", &["mep/hello-http".to_string()][..])
    );
    assert!(compiled.devices[0].egress.is_empty());
    let text = format!("{:?}", compiled.table.unwrap());
    assert!(text.contains("Port(80)"), "the named port is the container's 80: {text}");
}

type Rule = (String, String, String);

/// (apiGroup, resource, verb) for every combination a role grants; a rule limited to
/// `resourceNames` gives `resource/name` as its resource.
fn granted_by(role: &Value) -> BTreeSet<Rule> {
    let mut set = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let names: Vec<&str> =
            rule["resourceNames"].as_array().into_iter().flatten().map(|n| n.as_str().unwrap()).collect();
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                let resource = str_of(resource, "resource");
                let resources: Vec<String> = match names.as_slice() {
                    [] => vec![resource.to_string()],
                    names => names.iter().map(|n| format!("{resource}/{n}")).collect(),
                };
                for resource in resources {
                    for verb in rule["verbs"].as_array().unwrap() {
                        set.insert((str_of(group, "apiGroup").into(), resource.clone(), str_of(verb, "verb").into()));
                    }
                }
            }
        }
    }
    set
}

/// What the one ClusterRole of a file grants.
fn granted(rbac_file: &str) -> BTreeSet<Rule> {
    granted_by(&one(rbac_file, "ClusterRole"))
}

fn rules(list: &[(&str, &str, &str)]) -> BTreeSet<Rule> {
    list.iter().map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string())).collect()
}

/// `binding` (of `role_kind`) ties the role named like the service account `name` to it.
fn assert_binding(rbac_file: &str, binding_kind: &str, role_kind: &str, name: &str) {
    named(rbac_file, "ServiceAccount", name);
    let binding = named(rbac_file, binding_kind, name);
    assert_eq!(binding["roleRef"]["kind"], role_kind);
    assert_eq!(binding["roleRef"]["name"], named(rbac_file, role_kind, name)["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{ "kind": "ServiceAccount", "name": name, "namespace": "kube-system" }])
    );
}

/// The binding ties the role to the service account the DaemonSet runs as.
fn assert_bound(rbac_file: &str, ds_file: &str, name: &str) {
    assert_binding(rbac_file, "ClusterRoleBinding", "ClusterRole", name);
    let ds = one(ds_file, "DaemonSet");
    assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], name);
}

#[test]
fn kactus_rbac_is_exactly_what_the_plugin_calls() {
    let file = "manifests/kactus-serviceaccount-and-rbac.yaml";
    assert_eq!(
        granted(file),
        rules(&[
            ("", "pods", "get"),
            // network-status and the attested condition in one status PATCH (src/plugin/status.rs).
            ("", "pods/status", "patch"),
            ("k8s.cni.cncf.io", "network-attachment-definitions", "get"),
            // Several networks of one namespace are read with one LIST (src/plugin/networks.rs).
            ("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
            ("kaloom.com", "networks", "get"),
            // Several networks without a NAD are read with one LIST (src/plugin/networks.rs).
            ("kaloom.com", "networks", "list"),
            ("", "events", "create"),
            // node-local IPAM's slice claims (src/ipam/claims.rs).
            ("", "nodes", "get"),
            ("kactus.io", "sliceclaims", "list"),
            ("kactus.io", "sliceclaims", "create"),
            ("kactus.io", "sliceclaims", "update"),
            ("kactus.io", "sliceclaims", "delete"),
            // DRA-allocated devices (src/devices/dra.rs): the pod's claims, their drivers' slices.
            ("resource.k8s.io", "resourceclaims", "get"),
            ("resource.k8s.io", "resourceslices", "list"),
        ])
    );
    assert_binding(file, "ClusterRoleBinding", "ClusterRole", "kactus");
}

/// The installer may do one thing: create tokens of the plugin's service account, in its own
/// namespace. Its DaemonSet runs as it; the plugin's token comes from the TokenRequest API.
#[test]
fn the_installer_may_only_request_the_plugins_token() {
    let file = "manifests/kactus-serviceaccount-and-rbac.yaml";
    let role = named(file, "Role", "kactus-installer");
    assert_eq!(role["metadata"]["namespace"], "kube-system");
    assert_eq!(granted_by(&role), rules(&[("", "serviceaccounts/token/kactus", "create")]));
    assert_binding(file, "RoleBinding", "Role", "kactus-installer");
    let ds = one("manifests/kactus-ds.yaml", "DaemonSet");
    assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], "kactus-installer");
    let defaults = Cli::try_parse_from(["kactus-install"]).unwrap().install;
    assert_eq!(defaults.plugin_service_account, "kactus");
}

#[test]
fn podagent_rbac_is_exactly_what_podagent_calls() {
    let file = "manifests/podagent-serviceaccount-and-rbac.yaml";
    assert_eq!(
        granted(file),
        rules(&[
            ("", "pods", "get"),
            ("", "pods", "list"),
            ("", "pods", "watch"),
            ("events.k8s.io", "events", "create"),
            ("events.k8s.io", "events", "patch"),
            ("k8s.cni.cncf.io", "network-attachment-definitions", "get"),
            ("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
            ("k8s.cni.cncf.io", "network-attachment-definitions", "watch"),
            ("kaloom.com", "networks", "get"),
            ("", "pods/status", "patch"),
            ("k8s.cni.cncf.io", "multi-networkpolicies", "list"),
            ("k8s.cni.cncf.io", "multi-networkpolicies", "watch"),
            ("", "namespaces", "list"),
            ("", "namespaces", "watch"),
            ("", "services", "list"),
            ("", "services", "watch"),
            ("", "endpoints", "list"),
            ("", "endpoints", "watch"),
            ("discovery.k8s.io", "endpointslices", "list"),
            ("discovery.k8s.io", "endpointslices", "watch"),
        ])
    );
    assert_bound(file, "manifests/podagent-ds.yaml", "podagent");
}

/// One container's host mounts: mountPath -> (hostPath, readOnly, mountPropagation).
fn host_mounts(pod_spec: &Value, container: &Value) -> BTreeMap<String, (String, bool, String)> {
    let volumes: BTreeMap<&str, &Value> =
        pod_spec["volumes"].as_array().unwrap().iter().map(|v| (v["name"].as_str().unwrap(), v)).collect();
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let volume = volumes[m["name"].as_str().unwrap()];
            let host = str_of(&volume["hostPath"]["path"], "hostPath.path");
            (
                str_of(&m["mountPath"], "mountPath").to_string(),
                (
                    host.to_string(),
                    m["readOnly"].as_bool().unwrap_or(false),
                    m["mountPropagation"].as_str().unwrap_or("None").to_string(),
                ),
            )
        })
        .collect()
}

/// [`host_mounts`] of exactly these host dirs, each read-write at its own path.
fn read_write_at_the_same_path(dirs: &[&PathBuf]) -> BTreeMap<String, (String, bool, String)> {
    dirs.iter()
        .map(|dir| {
            let dir = dir.display().to_string();
            (dir.clone(), (dir, false, "None".to_string()))
        })
        .collect()
}

fn single_container(ds: &Value) -> (&Value, &Value) {
    let pod_spec = &ds["spec"]["template"]["spec"];
    let containers = pod_spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    (pod_spec, &containers[0])
}

fn assert_runs_everywhere_early(ds: &Value) {
    let pod_spec = &ds["spec"]["template"]["spec"];
    assert_eq!(pod_spec["hostNetwork"], true, "must work before the pod network exists");
    assert_eq!(pod_spec["priorityClassName"], "system-node-critical");
    assert_eq!(pod_spec["tolerations"], serde_json::json!([{ "operator": "Exists" }]));
    let selector = &ds["spec"]["selector"]["matchLabels"];
    for (key, value) in selector.as_object().unwrap() {
        assert_eq!(&ds["spec"]["template"]["metadata"]["labels"][key], value);
    }
    let (_, container) = single_container(ds);
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(container["resources"][bound][resource].is_string(), "{bound}.{resource} missing");
        }
    }
}

#[test]
fn kactus_daemonset_mounts_exactly_the_host_dirs_the_installer_writes() {
    let ds = one("manifests/kactus-ds.yaml", "DaemonSet");
    assert_runs_everywhere_early(&ds);
    let (pod_spec, container) = single_container(&ds);

    // The container's command line is a valid `kactus install` invocation...
    let command: Vec<&str> = container["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(command, ["/usr/local/bin/kactus", "install"]);
    let mut argv = vec!["kactus-install".to_string()];
    argv.extend(container["args"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()));
    let args = Cli::try_parse_from(argv).unwrap().install;
    assert!(!args.once, "the DaemonSet keeps watching");
    assert!(args.binary.is_none() && args.master_config.is_none());

    assert_eq!(args.plugin_service_account, "kactus");

    // ...whose directories are the host's, mounted read-write at the same path (the paths
    // written into the config are read on the host), and nothing else is mounted.
    assert_eq!(host_mounts(pod_spec, container), read_write_at_the_same_path(&[&args.cni_bin_dir, &args.cni_conf_dir]));
    assert_eq!(args.cni_bin_dir, Path::new("/opt/cni/bin"));
    assert_eq!(args.cni_conf_dir, Path::new("/etc/cni/net.d"));

    // The installer's own token (to request the plugin's) and the CA come from the
    // automounted service account at the default path.
    assert_ne!(pod_spec["automountServiceAccountToken"], false);
    assert_eq!(args.service_account_dir, Path::new("/var/run/secrets/kubernetes.io/serviceaccount"));

    // No wider than needed: root owns the host dirs, so no capability is required.
    let security = &container["securityContext"];
    assert_eq!(security["runAsUser"], 0);
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(security["capabilities"]["add"].is_null());
    assert!(pod_spec["hostPID"].is_null());
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    install: InstallArgs,
}

#[derive(Parser)]
struct UninstallCli {
    #[command(flatten)]
    uninstall: UninstallArgs,
}

/// The uninstall DaemonSet: `kactus uninstall` on every node with the installer's host dirs
/// and kactus's cache, no API access, Ready once kactus is off the node.
#[test]
fn uninstall_daemonset_mounts_what_kactus_put_on_the_node_and_probes_for_its_absence() {
    let ds = one("manifests/kactus-uninstall.yaml", "DaemonSet");
    assert_runs_everywhere_early(&ds);
    let (pod_spec, container) = single_container(&ds);
    assert_eq!(pod_spec["automountServiceAccountToken"], false, "it needs no API access");
    let strings =
        |v: &Value| -> Vec<String> { v.as_array().unwrap().iter().map(|s| str_of(s, "arg").to_string()).collect() };
    let command = strings(&container["command"]);
    assert_eq!(command, ["/usr/local/bin/kactus", "uninstall"]);
    let args = strings(&container["args"]);
    let mut argv = vec!["kactus-uninstall".to_string()];
    argv.extend(args.iter().cloned());
    let parsed = UninstallCli::try_parse_from(argv).unwrap().uninstall;
    assert!(!parsed.once && !parsed.force && !parsed.check, "it waits for pods, and never forces");

    let install_ds = one("manifests/kactus-ds.yaml", "DaemonSet");
    let (_, installer) = single_container(&install_ds);
    let mut installer_argv = vec!["kactus-install".to_string()];
    installer_argv.extend(strings(&installer["args"]));
    let installed = Cli::try_parse_from(installer_argv).unwrap().install;
    assert_eq!(
        (&parsed.cni_bin_dir, &parsed.cni_conf_dir, &parsed.cache_dir),
        (&installed.cni_bin_dir, &installed.cni_conf_dir, &installed.cache_dir)
    );
    // The cache's parent, not the cache: a mount point could not be removed, and its hostPath
    // would come back empty with every start of the uninstaller.
    let cache_parent = parsed.cache_dir.parent().unwrap().to_path_buf();
    let dirs = [&parsed.cni_bin_dir, &parsed.cni_conf_dir, &cache_parent];
    let mut expected = read_write_at_the_same_path(&dirs);
    // The pods' netns, to take podagent's tables and routes out of them.
    expected.insert("/var/run/netns".into(), ("/run/netns".into(), true, "HostToContainer".into()));
    assert_eq!(host_mounts(pod_spec, container), expected);

    // Ready = `kactus uninstall --check` with the same paths.
    let probe = strings(&container["readinessProbe"]["exec"]["command"]);
    let mut expected_probe = command.clone();
    expected_probe.push("--check".into());
    expected_probe.extend(args);
    assert_eq!(probe, expected_probe);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(container["securityContext"]["capabilities"]["add"], serde_json::json!(["NET_ADMIN", "SYS_ADMIN"]));
    assert_eq!(container["securityContext"]["privileged"], false);
}

#[test]
fn podagent_daemonset_mounts_what_podagent_and_the_plugin_need() {
    let ds = one("manifests/podagent-ds.yaml", "DaemonSet");
    assert_runs_everywhere_early(&ds);
    let (pod_spec, container) = single_container(&ds);
    assert_eq!(pod_spec["hostPID"], true, "netns of pods via /proc/<pid>/ns/net");
    assert_eq!(container["securityContext"]["privileged"], true);
    assert_eq!(container["command"], serde_json::json!(["/usr/local/bin/podagent"]));

    let mounts = host_mounts(pod_spec, container);
    let expect = |path: &str, read_only: bool, propagation: &str| {
        assert_eq!(mounts.get(path), Some(&(path.to_string(), read_only, propagation.to_string())), "{path}");
    };
    expect("/run/containerd", false, "None");
    expect("/var/run/crio", false, "None");
    // The runtime's netns bind mounts, made after podagent started, under the path runtimes
    // name (/var/run/netns/cni-...), from the host's /run/netns: containerd checks the
    // propagation of the hostPath itself and does not follow the /var/run -> /run symlink.
    assert_eq!(
        mounts.get("/var/run/netns"),
        Some(&("/run/netns".to_string(), false, "HostToContainer".to_string())),
        "{mounts:?}"
    );
    expect("/opt/cni/bin", true, "None");
    expect("/etc/cni/net.d", true, "None");
    // The plugin podagent invokes writes its cache (the installer's default cacheDir) and
    // delegate IPAM state under /var/lib/cni.
    expect("/var/lib/cni", false, "None");
    assert!(kactus::install::DEFAULT_CACHE_DIR.starts_with("/var/lib/cni/"));
    // The fast path's socket, at the host path the installer's config names.
    expect("/run/kactus", false, "None");
    assert!(kactus::fastpath::DEFAULT_SOCKET.starts_with("/run/kactus/"));
    assert_eq!(mounts.len(), 7, "{mounts:?}");

    let env = container["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "NODE_NAME" && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"));
    // The node's plugin runs in the host's filesystem, as under the runtime: in the mount
    // namespace of the host's init, which hostPID makes /proc/1 (or the runtime's).
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert!(args.contains(&"--plugin-mount-namespace=host"), "{args:?}");
    let socket = format!("--fastpath-socket={}", kactus::fastpath::DEFAULT_SOCKET);
    assert!(args.contains(&socket.as_str()), "{args:?}");
    // So the plugin reaches kubelet's pod-resources socket, the device-plugin checkpoint and
    // the device-info dir (networks backed by allocated devices) at their host paths: the
    // DaemonSet mounts none of them.
    let devices = kactus::devices::DevicePaths::default();
    for path in [&devices.pod_resources_socket, &devices.checkpoint_file, &devices.device_info_dir] {
        assert!(!mounts.keys().any(|m| path.starts_with(m)), "{} is mounted: {mounts:?}", path.display());
    }
    // Every flag the DaemonSet passes is one the real podagent binary accepts.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_podagent")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in container["args"].as_array().unwrap() {
        let flag = arg.as_str().unwrap().split('=').next().unwrap();
        assert!(help.contains(flag), "podagent has no {flag}:\n{help}");
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{probe}");
        assert_eq!(get["port"], 9648, "{probe}");
        assert_eq!(get["host"], "127.0.0.1", "{probe}");
    }
}

/// The Dockerfile's image, as far as it can be read without docker: the binaries it builds
/// (all copied to /usr/local/bin) and its entrypoint.
fn dockerfile_image() -> (BTreeSet<String>, Value) {
    let dockerfile = fs::read_to_string(repo("Dockerfile")).unwrap();
    assert!(dockerfile.contains("AS build"), "multi-stage");
    assert!(dockerfile.contains("unknown-linux-musl"), "static binary: it runs on the host");
    assert!(dockerfile.contains("COPY --from=build /out/ /usr/local/bin/"));
    let binaries = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG BINARIES="))
        .expect("ARG BINARIES")
        .trim_matches('"')
        .split_whitespace()
        .map(|b| format!("usr/local/bin/{b}"))
        .collect();
    let entrypoint = dockerfile.lines().find_map(|l| l.strip_prefix("ENTRYPOINT ")).expect("ENTRYPOINT");
    (binaries, serde_json::from_str(entrypoint).unwrap())
}

/// scripts/image.sh, run on stand-in binaries, makes the Dockerfile's image: the same
/// binaries at the same paths and the same entrypoint, in an archive `ctr images import` reads;
/// and every command a manifest runs is in it.
#[test]
fn the_image_script_and_the_dockerfile_make_the_same_image_with_what_the_manifests_run() {
    let dir = tempfile::tempdir().unwrap();
    let (binaries, entrypoint) = dockerfile_image();
    let stand_ins = dir.path().join("bin");
    fs::create_dir_all(&stand_ins).unwrap();
    for bin in &binaries {
        let name = Path::new(bin).file_name().unwrap();
        fs::write(stand_ins.join(name), format!("stand-in for {bin}")).unwrap();
    }
    let archive = dir.path().join("image.tar");
    let built = std::process::Command::new(repo("scripts/image.sh"))
        .args(["--binaries", stand_ins.to_str().unwrap(), "--out", archive.to_str().unwrap(), "--tag", "kactus:0.1.0"])
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let unpacked = dir.path().join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    let tar = |args: &[&str]| {
        let out = std::process::Command::new("tar").args(args).output().unwrap();
        assert!(out.status.success(), "tar {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    tar(&["-xf", archive.to_str().unwrap(), "-C", unpacked.to_str().unwrap()]);

    let manifest: Value = serde_json::from_slice(&fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["kactus:0.1.0"]));
    let config: Value =
        serde_json::from_slice(&fs::read(unpacked.join(str_of(&manifest[0]["Config"], "Config"))).unwrap()).unwrap();
    assert_eq!(config["config"]["Entrypoint"], entrypoint);
    assert_eq!(config["os"], "linux");
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer = unpacked.join(str_of(&layers[0], "layer"));
    let files: BTreeSet<String> = tar(&["-tf", layer.to_str().unwrap()])
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .filter(|l| l.starts_with("usr/local/bin/") && !l.ends_with('/'))
        .collect();
    assert_eq!(files, binaries, "image.sh and the Dockerfile hold the same binaries");
    let listing = tar(&["-tvf", layer.to_str().unwrap()]);
    for bin in &binaries {
        assert!(listing.lines().any(|l| l.starts_with("-rwxr-xr-x 0/0") && l.ends_with(bin.as_str())), "{listing}");
    }

    // What each workload runs is in the image (the image tag they name is the one built).
    let mut workloads = Vec::new();
    for file in yaml_files("manifests") {
        for doc in docs(&file) {
            if matches!(doc["kind"].as_str(), Some("DaemonSet" | "Deployment")) {
                workloads.push((file.clone(), doc));
            }
        }
    }
    assert_eq!(workloads.len(), 4, "kactus, podagent, uninstall DaemonSets and the endpoints Deployment");
    for (file, workload) in workloads {
        for container in workload["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
            assert_eq!(container["image"], "kactus:0.1.0", "{file}");
            let command = str_of(&container["command"][0], "command");
            assert!(binaries.contains(command.trim_start_matches('/')), "{file}: {command} is not in the image");
        }
    }
}

/// Every NetworkAttachmentDefinition in examples/, by name.
fn example_nads() -> BTreeMap<String, Value> {
    yaml_files("examples")
        .iter()
        .flat_map(|f| docs(f))
        .filter(|d| d["kind"] == "NetworkAttachmentDefinition")
        .map(|d| (d["metadata"]["name"].as_str().unwrap().to_string(), d))
        .collect()
}

fn nad_config(nad: &Value) -> Value {
    let text = str_of(&nad["spec"]["config"], "spec.config");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{}: {e}", nad["metadata"]["name"]))
}

#[test]
fn example_nads_carry_valid_cni_configs() {
    let nads = example_nads();
    let names: Vec<&str> = nads.keys().map(String::as_str).collect();
    assert_eq!(names, ["blue", "data", "green", "macvlan100", "mp1", "seed", "slices", "sriov-net"]);
    for (name, nad) in &nads {
        let config = nad_config(nad);
        assert!(config["cniVersion"].is_string(), "{name}: cniVersion");
        check_cni_config(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The plugin's own parser, with the NAD's name as the default network name.
        kactus::cni::NetworkConfig::parse(&config, name, "1.0.0").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!is_kactus_config(&config), "{name}");
        if let Some(own) = config.get("name") {
            assert_eq!(own, name.as_str(), "{name}: config name differs from the NAD's");
        }
    }
    let vlan = |name: &str| nad_config(&nads[name]);
    assert_eq!((vlan("green")["type"].clone(), vlan("green")["vlanId"].clone()), ("vlan".into(), 42.into()));
    assert_eq!((vlan("blue")["type"].clone(), vlan("blue")["vlanId"].clone()), ("vlan".into(), 43.into()));
    assert_eq!(vlan("green")["ipam"]["range"], "192.168.42.0/24");
    assert_eq!(vlan("blue")["ipam"]["range"], "192.168.43.0/24");
    let data = nad_config(&nads["data"]);
    assert_eq!((data["type"].as_str(), data["bridge"].as_str()), (Some("bridge"), Some("data-br")));
    assert_eq!(data["ipam"]["subnet"], "10.10.0.0/24");
    let mp1 = &nads["mp1"];
    assert_eq!(mp1["metadata"]["namespace"], "mep");
    assert_eq!(nad_config(mp1)["type"], "macvlan");
    assert_eq!(nad_config(mp1)["ipam"]["type"], "host-local");

    let macvlan100 = nad_config(&nads["macvlan100"]);
    let plugins = macvlan100["plugins"].as_array().unwrap();
    let types: Vec<&str> = plugins.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["macvlan", "tuning"]);
    assert_eq!(plugins[0]["ipam"]["type"], "static");
    assert_eq!(plugins[0]["capabilities"]["ips"], true);
    assert_eq!(plugins[1]["capabilities"]["mac"], true);
}

#[test]
fn the_sriov_example_pod_asks_kubelet_for_a_device_per_attachment_of_the_nads_resource() {
    let nad = &example_nads()["sriov-net"];
    let resource = str_of(&nad["metadata"]["annotations"][kactus::devices::RESOURCE_NAME_ANNOTATION], "resourceName");
    let pod = one("examples/sriov-pod.yaml", "Pod");
    let networks = str_of(&pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"], "networks annotation");
    let selections = kactus::attachment::parse_npwg_networks(networks).unwrap();
    assert!(selections.iter().all(|s| s.name == "sriov-net"), "{selections:?}");
    let resources = &pod["spec"]["containers"][0]["resources"];
    for bound in ["requests", "limits"] {
        assert_eq!(resources[bound][resource], selections.len().to_string(), "{bound}");
    }
}

#[test]
fn example_apps_use_the_seed_annotation_and_name_defined_networks() {
    let nads = example_nads();
    for app in ["app1", "app2"] {
        let deployment = one(&format!("examples/{app}.yaml"), "Deployment");
        let template = &deployment["spec"]["template"];
        assert_eq!(template["metadata"]["annotations"]["networks"], r#"[ { "name": "green" }, { "name": "blue" } ]"#);
        assert_eq!(template["metadata"]["labels"]["app"], app);
        assert_eq!(template["spec"]["containers"][0]["image"], "alpine:3.20");
    }

    let pod = one("examples/macvlan100-pod.yaml", "Pod");
    let selection: Value = serde_json::from_str(str_of(
        &pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        "networks annotation",
    ))
    .unwrap();
    let element = &selection[0];
    assert!(nads.contains_key(str_of(&element["name"], "name")));
    assert_eq!(element["ips"], serde_json::json!(["10.158.100.2/24"]));
    assert_eq!(element["mac"], "c2:b0:57:49:47:f1");
    assert_eq!(element["gateway"], serde_json::json!(["10.158.100.254"]));
    assert_eq!(element["default-route"], serde_json::json!(["10.158.100.254"]));

    for kind in ["Deployment", "Service"] {
        let object = one("examples/mp1-service.yaml", kind);
        let annotations = if kind == "Deployment" {
            &object["spec"]["template"]["metadata"]["annotations"]
        } else {
            &object["metadata"]["annotations"]
        };
        assert_eq!(annotations["k8s.v1.cni.cncf.io/networks"], "mep/mp1");
    }
}

#[test]
fn the_kactus_conf_example_is_a_kactus_config_with_one_master() {
    let text = fs::read_to_string(repo("examples/kactus.conf")).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    check_cni_config(&config).unwrap();
    kactus::plugin::KactusConfig::from_bytes(text.as_bytes()).unwrap();
    assert!(is_kactus_config(&config));
    assert_eq!(config["kubeconfig"], "/etc/cni/net.d/kactus.d/kactus-kubeconfig.yaml");
    let masters = config["delegates"].as_array().unwrap().iter().filter(|d| d["masterPlugin"] == true).count();
    assert_eq!(masters, 1);
}

#[test]
fn the_hello1_example_service_is_the_seeds_and_served_once_the_webhook_moved_its_selector() {
    let svc = one("examples/mp1-service.yaml", "Service");
    let mut svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(svc).unwrap();
    assert!(matches!(kactus::endpoints::shape::shape_of(&svc), kactus::endpoints::shape::Shape::SeedShaped { .. }));
    let ops = kactus::endpoints::webhook::mutation(&svc).expect("the webhook moves it");
    let mut value = serde_json::to_value(&svc).unwrap();
    for op in ops {
        match op["op"].as_str().unwrap() {
            "add" => {
                let key = op["path"].as_str().unwrap().rsplit('/').next().unwrap().replace("~1", "/");
                value["metadata"]["annotations"][key] = op["value"].clone();
            }
            _ => drop(value["spec"].as_object_mut().unwrap().remove("selector")),
        }
    }
    svc = serde_json::from_value(value).unwrap();
    match kactus::endpoints::shape::shape_of(&svc) {
        kactus::endpoints::shape::Shape::Supported { network, selector } => {
            assert_eq!(format!("{network}"), "mep/mp1");
            assert_eq!(selector.get("app").map(String::as_str), Some("hello"));
        }
        other => panic!("hello1 is not served: {other:?}"),
    }
}

/// Issue 26: scripts/create-kubeconfig.sh minted a legacy Secret-based token (it never
/// expires and lives in the cluster) when asked for a year's token failed. It asks the
/// TokenRequest API for a bounded lifetime, refuses a longer one before calling kubectl, never
/// falls back to a Secret, and its usage says what to do when the token expires. Run against
/// a kubectl stand-in that records its calls.
#[test]
fn create_kubeconfig_asks_the_token_request_api_for_a_bounded_token_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let kubectl = dir.path().join("kubectl");
    fs::write(
        &kubectl,
        format!(
            "#!/bin/sh\necho \"$*\" >> {calls}\ncase \"$*\" in\n  'create token'*) [ -e {fail} ] && exit 1; echo minted-token ;;\n  *'cluster.server'*) echo https://10.0.0.1:6443 ;;\n  *'certificate-authority-data'*) echo Q0E= ;;\nesac\n",
            calls = calls.display(),
            fail = dir.path().join("fail").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&kubectl, fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("bash")
            .arg(repo("scripts/create-kubeconfig.sh"))
            .args(["-o", &dir.path().join("out").display().to_string()])
            .args(args)
            .env("PATH", format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default()))
            .output()
            .unwrap();
        let recorded = fs::read_to_string(&calls).unwrap_or_default();
        let _ = fs::remove_file(&calls);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), recorded)
    };

    let (code, _, recorded) = run(&[]);
    assert_eq!(code, Some(0));
    assert!(recorded.contains("create token kactus -n kube-system --duration=24h"), "{recorded}");
    let written = fs::read_to_string(dir.path().join("out/kactus-kubeconfig.yaml")).unwrap();
    assert!(written.contains("token: \"minted-token\""), "{written}");

    for too_long in ["721h", "8760h", "5m", "1y"] {
        let (code, stderr, recorded) = run(&["-d", too_long]);
        assert_eq!(code, Some(2), "-d {too_long}: {stderr}");
        assert!(recorded.is_empty(), "-d {too_long} reached kubectl: {recorded}");
        assert!(stderr.contains("When the token expires") && stderr.contains("run this script again"), "{stderr}");
    }

    fs::write(dir.path().join("fail"), "").unwrap();
    let (code, stderr, recorded) = run(&["-d", "48h"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!recorded.contains("secret") && !recorded.contains("apply"), "a legacy token Secret: {recorded}");
}
