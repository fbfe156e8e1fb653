//! Attachments backed by allocated devices (SR-IOV VFs and the like), checked as an operator
//! would on a node without VFs: a fake kubelet (the pod-resources gRPC API on a unix socket,
//! the real proto messages), device-plugin checkpoints and device-info files in a temp dir,
//! ResourceClaims and ResourceSlices in the test apiserver, and the real `host-device`
//! plugin moving a veth of the node into the pod, behind a wrapper that records what it got.

mod common;
use common::grpc::{unary, Answer, FakeDaemon, UnixGrpcServer};
use common::*;
use kactus::devices::podresources::{self, ContainerDevices, ContainerResources, PodResources};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::body::Body;

const NPWG: &str = "k8s.v1.cni.cncf.io/networks";
const SRIOV: &str = "intel.com/sriov";
const VF1: &str = "0000:03:02.1";
const VF2: &str = "0000:03:02.2";

/// host-device looks a PCI `pciBusID` (or `runtimeConfig.deviceID`) up in sysfs, where this
/// machine has no VFs: the VFs here are veths, so the real plugin is handed the device by
/// name only, while the record keeps what kactus sent.
const BY_NAME_ONLY: &str = r#"s/,"(pciBusID|deviceID)":"[^"]*"//g; s/"(pciBusID|deviceID)":"[^"]*",?//g"#;

/// kubelet's pod-resources API, answering `List` with the pods the test gave it.
#[derive(Clone, Default)]
struct FakeKubelet {
    pods: Arc<Mutex<Vec<PodResources>>>,
}

impl FakeKubelet {
    /// Pod `default/<pod>` has, in container `<container>`, these devices of `resource`.
    fn allocate(&self, pod: &str, container: &str, resource: &str, ids: &[&str]) {
        let devices = ContainerDevices {
            resource_name: resource.into(),
            device_ids: ids.iter().map(|s| s.to_string()).collect(),
        };
        let mut pods = self.pods.lock().unwrap();
        let index = match pods.iter().position(|p| p.name == pod) {
            Some(i) => i,
            None => {
                pods.push(PodResources { name: pod.into(), namespace: "default".into(), containers: Vec::new() });
                pods.len() - 1
            }
        };
        pods[index].containers.push(ContainerResources { name: container.into(), devices: vec![devices] });
    }
}

impl FakeDaemon for FakeKubelet {
    const SERVICE: &'static str = podresources::SERVICE;

    fn answer(self, path: &str, request: http::Request<Body>) -> Answer {
        let path = path.to_string();
        Box::pin(async move {
            match path.as_str() {
                podresources::LIST => {
                    let pods = self.pods.lock().unwrap().clone();
                    unary(request, move |_: podresources::ListPodResourcesRequest| {
                        Ok(podresources::ListPodResourcesResponse { pod_resources: pods })
                    })
                    .await
                }
                other => tonic::Status::unimplemented(format!("{other} is not faked")).into_http(),
            }
        })
    }
}

/// One test's node: the sandbox, its kubelet paths in the temp dir, veths standing in for
/// VFs in the node netns, and host-device behind a recording wrapper.
struct Node {
    sb: Sandbox,
    log: PathBuf,
    pod: usize,
    /// The kubeconfig the plugin uses: the sandbox's (all-powerful) unless set.
    kubeconfig: Option<PathBuf>,
}

impl Node {
    fn new(vfs: &[&str]) -> Node {
        let mut sb = Sandbox::new();
        let log = recording_plugin_filtered(&mut sb, "host-device", BY_NAME_ONLY);
        for vf in vfs {
            sb.node.ip(&["link", "add", vf, "type", "veth", "peer", "name", &format!("{vf}p")]);
        }
        let pod = sb.pod("app1");
        Node { sb, log, pod, kubeconfig: None }
    }

    /// From now on the plugin calls the apiserver as its own service account, `kactus`, with
    /// the shipped RBAC (a token from the TokenRequest API, as the installer gets it): what
    /// it calls must be what the manifest grants.
    fn as_the_plugins_service_account(&mut self) {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/kactus-serviceaccount-and-rbac.yaml");
        self.sb.apply(&std::fs::read_to_string(manifest).unwrap());
        let admin = self.sb.kubeconfig.clone();
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}});
        let answer: Value = kactus::netns::run_in(&self.sb.node.path, move || {
            let client = kactus::kube::Client::new(Some(&admin), Default::default()).unwrap();
            client.create("/api/v1/namespaces/kube-system/serviceaccounts/kactus/token", &request).unwrap()
        })
        .unwrap();
        let token = answer["status"]["token"].as_str().unwrap();
        let path = self.sb.path("plugin-kubeconfig.yaml");
        std::fs::write(&path, self.sb.api().kubeconfig_yaml().replace(self.sb.api().token(), token)).unwrap();
        self.kubeconfig = Some(path);
    }

    fn socket(&self) -> PathBuf {
        self.sb.path("pod-resources.sock")
    }

    fn checkpoint(&self) -> PathBuf {
        self.sb.path("kubelet_internal_checkpoint")
    }

    fn devinfo(&self) -> PathBuf {
        self.sb.path("devinfo")
    }

    fn kubelet(&self) -> (FakeKubelet, UnixGrpcServer) {
        let kubelet = FakeKubelet::default();
        let server = UnixGrpcServer::start(&self.socket(), kubelet.clone());
        (kubelet, server)
    }

    fn conf(&self) -> Value {
        let mut conf = self.sb.kactus_conf();
        conf["podResourcesSocket"] = self.socket().display().to_string().into();
        conf["devicePluginCheckpoint"] = self.checkpoint().display().to_string().into();
        conf["deviceInfoDir"] = self.devinfo().display().to_string().into();
        if let Some(kubeconfig) = &self.kubeconfig {
            conf["kubeconfig"] = kubeconfig.display().to_string().into();
        }
        conf
    }

    /// A host-device network taking VF `vf`, annotated with `resource`; `capabilities` are
    /// what its plugin declares.
    fn nad(&self, name: &str, vf: &str, resource: &str, capabilities: Value, subnet: &str) {
        let config = json!({"cniVersion": "1.0.0", "type": "rec-host-device", "device": vf, "capabilities": capabilities,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": self.sb.ipam_dir()}});
        let mut nad: Value = serde_json::from_str(&Sandbox::nad_yaml("default", name, &config)).unwrap();
        nad["metadata"]["annotations"] = json!({"k8s.v1.cni.cncf.io/resourceName": resource});
        self.sb.apply(&nad.to_string());
    }

    fn pod_networks(&self, networks: &str) {
        self.sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({ NPWG: networks })));
    }

    fn cni(&self, command: &str, extra_args: &str) -> CniOutput {
        let args = format!("{}{extra_args}", pod_args("default", "app1"));
        self.sb.kactus(command, "c-app1", Some(&self.sb.pods[self.pod].path), "eth0", &args, &self.conf())
    }

    /// What host-device got on stdin for `command` on `ifname`, each time.
    fn received(&self, command: &str, ifname: &str) -> Vec<Value> {
        recorded_calls(&self.log)
            .into_iter()
            .filter(|c| c["command"] == command && c["ifname"] == ifname)
            .map(|c| c["stdin"].clone())
            .collect()
    }

    fn network_status(&self) -> Vec<Value> {
        let pod = self.sb.api().store().get("pods", "default", "app1").unwrap();
        let text = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap_or("[]");
        serde_json::from_str(text).unwrap()
    }

    fn attachment_devinfo(&self, network: &str, ifname: &str) -> PathBuf {
        self.devinfo().join("cni").join(format!("default-{network}-c-app1_{ifname}"))
    }

    /// No device, lease, cache or device-info file left; every VF back on the node.
    fn assert_clean(&self, vfs: &[&str]) {
        assert!(self.sb.pod_devices(self.pod).is_empty(), "devices left: {:?}", self.sb.pod_devices(self.pod));
        assert!(self.sb.leases().is_empty(), "leases left: {:?}", self.sb.leases());
        assert!(self.sb.cache_files().is_empty(), "cache left: {:?}", self.sb.cache_files());
        let left: Vec<_> = std::fs::read_dir(self.devinfo().join("cni")).into_iter().flatten().flatten().collect();
        assert!(left.is_empty(), "device-info files left: {left:?}");
        for vf in vfs {
            assert!(self.sb.node.has_link(vf), "{vf} is not back on the node: {:?}", self.sb.node.links());
        }
    }
}

/// Two networks of one resource, sriov-a on VF vfa and sriov-b on vfb, and a kubelet that
/// allocated the pod `devices` of it.
fn two_networks_of_one_resource(devices: &[&str]) -> (Node, UnixGrpcServer) {
    let node = Node::new(&["vfa", "vfb"]);
    let (kubelet, server) = node.kubelet();
    kubelet.allocate("app1", "app", SRIOV, devices);
    node.nad("sriov-a", "vfa", SRIOV, json!({}), "10.56.1.0/24");
    node.nad("sriov-b", "vfb", SRIOV, json!({}), "10.56.2.0/24");
    (node, server)
}

fn dev(name: &str) -> String {
    kactus::attachment::device_name_for(name)
}

fn write_json(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, value.to_string()).unwrap();
}

#[test]
fn two_attachments_of_one_resource_get_the_sorted_devices_and_keep_them_on_check_and_del() {
    let node = Node::new(&["vfa", "vfb"]);
    let (kubelet, server) = node.kubelet();
    // Spread over two containers, listed out of order, beside a resource no network names.
    kubelet.allocate("app1", "app", SRIOV, &[VF2]);
    kubelet.allocate("app1", "sidecar", SRIOV, &[VF1]);
    kubelet.allocate("app1", "app", "nvidia.com/gpu", &["GPU-7"]);
    // The device plugin describes VF1 (as the SR-IOV device plugin does), not VF2.
    let vf1_info =
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": VF1, "pf-pci-address": "0000:03:00.0"}});
    write_json(&node.devinfo().join("dp").join(format!("intel.com-sriov-{VF1}-device.json")), &vf1_info);
    node.nad("sriov-a", "vfa", SRIOV, json!({"deviceID": true, "CNIDeviceInfoFile": true}), "10.56.1.0/24");
    node.nad("sriov-b", "vfb", SRIOV, json!({}), "10.56.2.0/24");
    node.pod_networks("sriov-a, sriov-b");
    let (a, b) = (dev("sriov-a"), dev("sriov-b"));

    node.cni("ADD", "").ok();
    let mut devices = node.sb.pod_devices(node.pod);
    devices.sort();
    let mut want = vec!["eth0".to_string(), a.clone(), b.clone()];
    want.sort();
    assert_eq!(devices, want, "host-device moved both VFs in");

    // The first attachment of the resource got the first sorted device, the second the next.
    let (add_a, add_b) = (node.received("ADD", &a), node.received("ADD", &b));
    let (add_a, add_b) = (&add_a[0], &add_b[0]);
    let a_file = node.attachment_devinfo("sriov-a", &a);
    assert_eq!((add_a["deviceID"].as_str(), add_a["pciBusID"].as_str()), (Some(VF1), Some(VF1)));
    assert_eq!(add_a["runtimeConfig"], json!({"deviceID": VF1, "CNIDeviceInfoFile": a_file.display().to_string()}));
    assert_eq!((add_b["deviceID"].as_str(), add_b["pciBusID"].as_str()), (Some(VF2), Some(VF2)));
    assert!(add_b.get("runtimeConfig").is_none(), "sriov-b declares no capability: {add_b}");

    // device-info: the device plugin's for VF1, kactus's pci description for VF2.
    let vf2_info = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": VF2}});
    let on_disk = |p: &Path| serde_json::from_slice::<Value>(&std::fs::read(p).unwrap()).unwrap();
    assert_eq!(on_disk(&a_file), vf1_info);
    assert_eq!(on_disk(&node.attachment_devinfo("sriov-b", &b)), vf2_info);
    let status = node.network_status();
    let entry = |name: &str| status.iter().find(|e| e["name"] == name).cloned().unwrap_or_else(|| panic!("{status:?}"));
    let (sa, sb) = (entry("default/sriov-a"), entry("default/sriov-b"));
    assert_eq!((sa["interface"].as_str(), sa["device-info"].clone()), (Some(a.as_str()), vf1_info.clone()));
    assert_eq!((sb["interface"].as_str(), sb["device-info"].clone()), (Some(b.as_str()), vf2_info));
    assert_eq!(sa["ips"], json!(["10.56.1.2"]));
    assert!(entry("cluster").get("device-info").is_none());

    // kubelet gone (restarting): CHECK and DEL use the devices the cache recorded.
    drop(server);
    node.cni("CHECK", "").ok();
    assert_eq!(node.received("CHECK", &a)[0]["deviceID"], VF1);
    node.cni("DEL", "").ok();
    for (ifname, add) in [(&a, add_a), (&b, add_b)] {
        let mut del = node.received("DEL", ifname)[0].clone();
        del.as_object_mut().unwrap().remove("prevResult");
        assert_eq!(&del, add, "DEL of {ifname} sends what ADD sent");
    }
    node.assert_clean(&["vfa", "vfb"]);
    assert!(node.devinfo().join("dp").join(format!("intel.com-sriov-{VF1}-device.json")).exists(), "the plugin's own");
}

#[test]
fn the_checkpoint_stands_in_when_kubelet_serves_no_pod_resources_socket() {
    let node = Node::new(&["vfa"]);
    // kubelet 1.20+'s shape: device IDs per NUMA node, entries keyed by pod UID.
    let checkpoint = json!({"Data": {"PodDeviceEntries": [
        {"PodUID": "uid-app1", "ContainerName": "app", "ResourceName": SRIOV, "DeviceIDs": {"0": [VF2, VF1]}, "AllocResp": "CgA="},
        {"PodUID": "uid-other", "ContainerName": "app", "ResourceName": SRIOV, "DeviceIDs": {"0": ["0000:03:02.0"]}, "AllocResp": "CgA="}],
        "RegisteredDevices": {SRIOV: [VF1, VF2, "0000:03:02.0"]}}, "Checksum": 2793429423u64});
    write_json(&node.checkpoint(), &checkpoint);
    node.nad("sriov-a", "vfa", SRIOV, json!({}), "10.56.1.0/24");
    node.pod_networks("sriov-a");

    node.cni("ADD", "").ok();
    let a = dev("sriov-a");
    assert_eq!(node.received("ADD", &a)[0]["deviceID"], VF1);
    assert_eq!(node.network_status().iter().filter(|e| e.get("device-info").is_some()).count(), 1);
    node.cni("DEL", "").ok();
    node.assert_clean(&["vfa"]);
}

#[test]
fn dra_claims_give_the_device_of_a_resource_no_device_plugin_allocated_with_the_shipped_rbac() {
    let mut node = Node::new(&["vfa"]);
    node.as_the_plugins_service_account();
    let (kubelet, _server) = node.kubelet();
    kubelet.allocate("app1", "app", "nvidia.com/gpu", &["GPU-7"]);
    node.nad("sriov-a", "vfa", SRIOV, json!({"deviceID": true}), "10.56.1.0/24");
    // The pod's claim comes from a template; its allocation holds a GPU and a VF.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app1", "namespace": "default", "uid": "uid-app1", "annotations": {NPWG: "sriov-a"}},
        "spec": {"nodeName": "node1", "containers": [{"name": "app", "image": "alpine"}],
                 "resourceClaims": [{"name": "net", "resourceClaimTemplateName": "one-vf"}]},
        "status": {"phase": "Pending", "resourceClaimStatuses": [{"name": "net", "resourceClaimName": "app1-net-k2x9q"}]}});
    let claim = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "app1-net-k2x9q", "namespace": "default"},
        "status": {"allocation": {"devices": {"results": [
            {"request": "gpu", "driver": "gpu.example.com", "pool": "node1", "device": "gpu-0"},
            {"request": "vf", "driver": "sriov.example.com", "pool": "node1", "device": "vf-1"}]}}}});
    let slice = |name: &str, generation: i64, device_id: &str| {
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": name},
            "spec": {"driver": "sriov.example.com", "nodeName": "node1",
                "pool": {"name": "node1", "generation": generation, "resourceSliceCount": 1},
                "devices": [{"name": "vf-1", "attributes": {
                    "k8s.cni.cncf.io/deviceID": {"string": device_id},
                    "k8s.cni.cncf.io/resourceName": {"string": SRIOV},
                    "sriov.example.com/numaNode": {"int": 0}}}]}})
    };
    let gpu_slice = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "node1-gpu"},
        "spec": {"driver": "gpu.example.com", "nodeName": "node1", "pool": {"name": "node1", "generation": 1, "resourceSliceCount": 1},
                 "devices": [{"name": "gpu-0", "attributes": {"uuid": {"string": "GPU-7"}}}]}});
    for object in [pod, claim, slice("node1-sriov-old", 1, "0000:03:02.7"), slice("node1-sriov", 2, VF2), gpu_slice] {
        node.sb.apply(&object.to_string());
    }

    node.cni("ADD", "").ok();
    let a = dev("sriov-a");
    let add = &node.received("ADD", &a)[0];
    assert_eq!(add["deviceID"], VF2, "from the pool's current generation");
    assert_eq!(add["runtimeConfig"]["deviceID"], VF2);
    let status = node.network_status();
    let sa = status.iter().find(|e| e["name"] == "default/sriov-a").unwrap();
    assert_eq!(sa["device-info"], json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": VF2}}));
    node.cni("DEL", "").ok();
    node.assert_clean(&["vfa"]);
}

#[test]
fn a_dynamic_add_takes_the_first_device_no_attachment_of_the_pod_holds() {
    let (node, _kubelet) = two_networks_of_one_resource(&[VF1, VF2]);
    node.pod_networks("sriov-b");
    let (a, b) = (dev("sriov-a"), dev("sriov-b"));
    node.cni("ADD", "").ok();
    assert_eq!(node.received("ADD", &b)[0]["deviceID"], VF1);

    // podagent hot-plugs sriov-a: VF1 is held by sriov-b, so it gets VF2.
    node.pod_networks("sriov-b, sriov-a");
    node.cni("ADD", ";K8S_POD_NETWORK=sriov-a").ok();
    assert_eq!(node.received("ADD", &a)[0]["deviceID"], VF2);
    // sriov-b goes and comes back: VF1 is free again.
    node.cni("DEL", ";K8S_POD_NETWORK=sriov-b").ok();
    node.cni("ADD", ";K8S_POD_NETWORK=sriov-b").ok();
    assert_eq!(node.received("ADD", &b)[1]["deviceID"], VF1);
    let with_info = node.network_status().iter().filter(|e| e.get("device-info").is_some()).count();
    assert_eq!(with_info, 2);
    node.cni("DEL", "").ok();
    node.assert_clean(&["vfa", "vfb"]);
}

#[test]
fn a_primary_network_on_eth0_takes_the_first_device_and_the_others_the_next() {
    let (node, _kubelet) = two_networks_of_one_resource(&[VF2, VF1]);
    // kactus's annotation: sriov-b is the pod's eth0, read and made before the others.
    let networks = r#"[{"name": "sriov-a"}, {"name": "sriov-b", "isPrimary": true}]"#;
    node.sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": networks})));
    node.cni("ADD", "").ok();
    assert_eq!(node.received("ADD", "eth0")[0]["deviceID"], VF1);
    assert_eq!(node.received("ADD", &dev("sriov-a"))[0]["deviceID"], VF2);
    node.cni("DEL", "").ok();
    node.assert_clean(&["vfa", "vfb"]);
}

#[test]
fn a_kaloom_network_naming_a_resource_gets_its_device_the_same_way() {
    let node = Node::new(&["vfa"]);
    let (kubelet, _server) = node.kubelet();
    kubelet.allocate("app1", "app", SRIOV, &[VF1]);
    let config = json!({"cniVersion": "0.3.1", "device": "vfa",
        "ipam": {"type": "host-local", "subnet": "10.56.1.0/24", "dataDir": node.sb.ipam_dir()}});
    let network = json!({"apiVersion": "kaloom.com/v1", "kind": "Network",
        "metadata": {"name": "sriov-a", "namespace": "default", "annotations": {"k8s.v1.cni.cncf.io/resourceName": SRIOV}},
        "spec": {"plugin": "rec-host-device", "config": config.to_string()}});
    node.sb.apply(&network.to_string());
    node.sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"sriov-a"}]"#})));
    node.cni("ADD", "").ok();
    let add = &node.received("ADD", &dev("sriov-a"))[0];
    assert_eq!((add["deviceID"].as_str(), add["pciBusID"].as_str()), (Some(VF1), Some(VF1)));
    node.cni("DEL", "").ok();
    node.assert_clean(&["vfa"]);
}

/// An ADD that fails for want of a device: the error names the attachment and the resource,
/// and eth0 (made beside the NAD reads) is rolled back.
fn assert_fails_clean(node: &Node, code: u64, parts: &[&str], vfs: &[&str]) -> String {
    let (got, msg) = node.cni("ADD", "").err();
    assert_eq!(got, code, "{msg}");
    for part in parts {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    assert!(node.received("ADD", &dev("sriov-a")).is_empty(), "no delegate ran for the attachment");
    node.assert_clean(vfs);
    node.cni("DEL", "").ok();
    msg
}

#[test]
fn a_resource_the_pod_was_not_allocated_is_code_104_naming_attachment_and_resource() {
    let node = Node::new(&["vfa"]);
    let (kubelet, _server) = node.kubelet();
    kubelet.allocate("app1", "app", "nvidia.com/gpu", &["GPU-7"]);
    node.nad("sriov-a", "vfa", SRIOV, json!({}), "10.56.1.0/24");
    node.pod_networks("sriov-a");
    let socket = node.socket().display().to_string();
    let msg = assert_fails_clean(&node, 104, &["default/sriov-a", SRIOV, "default/app1", &socket, "DRA"], &["vfa"]);
    let events = pod_events(&node.sb, "default", "app1");
    assert_eq!(events, vec![("Warning".into(), "AttachFailed".into(), msg)]);
}

#[test]
fn more_attachments_than_devices_is_code_104_and_leaves_nothing() {
    let (node, _kubelet) = two_networks_of_one_resource(&[VF1]);
    node.pod_networks("sriov-a, sriov-b");
    assert_fails_clean(&node, 104, &["default/sriov-b", SRIOV, VF1, "all taken"], &["vfa", "vfb"]);
}

#[test]
fn a_delegate_failing_on_its_device_leaves_no_device_info_file() {
    let node = Node::new(&["vfa"]);
    let (kubelet, _server) = node.kubelet();
    kubelet.allocate("app1", "app", SRIOV, &[VF1]);
    let info = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": VF1}});
    write_json(&node.devinfo().join("dp").join(format!("intel.com-sriov-{VF1}-device.json")), &info);
    // The VF named in the NAD is not on the node: host-device fails after kactus copied the
    // device plugin's description into the attachment's file.
    node.nad("sriov-a", "vf-gone", SRIOV, json!({}), "10.56.1.0/24");
    node.pod_networks("sriov-a");
    let (code, msg) = node.cni("ADD", "").err();
    assert!(msg.contains("default/sriov-a") && msg.contains("failed to find host device"), "{code}: {msg}");
    assert_eq!(node.received("ADD", &dev("sriov-a"))[0]["deviceID"], VF1, "the delegate ran");
    let left: Vec<_> = std::fs::read_dir(node.devinfo().join("cni")).into_iter().flatten().flatten().collect();
    assert!(left.is_empty(), "device-info files left: {left:?}");
    // host-device's DEL fails as its ADD did (no such device): the call is kept for the
    // runtime's DEL, which gives it up.
    node.cni("DEL", "").ok();
    node.assert_clean(&["vfa"]);
}

#[test]
fn a_kubelet_socket_that_refuses_is_code_11_and_leaves_nothing() {
    let node = Node::new(&["vfa"]);
    // A socket file nobody listens on any more (kubelet restarting).
    drop(std::os::unix::net::UnixListener::bind(node.socket()).unwrap());
    node.nad("sriov-a", "vfa", SRIOV, json!({}), "10.56.1.0/24");
    node.pod_networks("sriov-a");
    let socket = node.socket().display().to_string();
    assert_fails_clean(&node, 11, &["default/sriov-a", SRIOV, &socket, "connect"], &["vfa"]);
}

#[test]
fn a_kubelet_that_never_answers_is_bounded_by_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kubelet.sock");
    let _silent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let started = std::time::Instant::now();
    let timeout = Duration::from_millis(300);
    let e = podresources::pod_devices(&socket, timeout, "default", "app1").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(e.code(), 11);
    assert!(e.to_string().contains("no answer within") && e.to_string().contains("kubelet.sock"), "{e}");
}

/// What an allocated device adds to an ADD and a DEL: kactus's own time (its wall time minus
/// its delegates', which it logs) for one host-device attachment whose NAD names a resource,
/// against the same attachment without the annotation, with kubelet listing 101 pods.
/// `cargo test --release --test devices device_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn device_cost() {
    let node = Node::new(&["vfa"]);
    let (kubelet, _server) = node.kubelet();
    for i in 0..100 {
        kubelet.allocate(&format!("other{i}"), "app", SRIOV, &[&format!("0000:04:{:02x}.{}", i / 8, i % 8)]);
    }
    kubelet.allocate("app1", "app", SRIOV, &[VF1]);
    node.nad("sriov-a", "vfa", SRIOV, json!({}), "10.56.1.0/24");
    let plain = json!({"cniVersion": "1.0.0", "type": "rec-host-device", "device": "vfa",
        "ipam": {"type": "host-local", "subnet": "10.56.2.0/24", "dataDir": node.sb.ipam_dir()}});
    node.sb.apply(&Sandbox::nad_yaml("default", "plain", &plain));
    let mut conf = node.conf();
    conf["logLevel"] = "info".into();
    let log = node.sb.path("kactus.log");
    let own = |command: &str| -> Duration {
        let start = std::time::Instant::now();
        let args = pod_args("default", "app1");
        node.sb.kactus(command, "c-app1", Some(&node.sb.pods[node.pod].path), "eth0", &args, &conf).ok();
        let wall = start.elapsed();
        let text = std::fs::read_to_string(&log).unwrap();
        let marker = format!("{command} c-app1 answered");
        let line = text.lines().rev().find(|l| l.contains(&marker)).expect("answered line");
        let ms: f64 = line.rsplit_once(" taking ").unwrap().1.strip_suffix(" ms").unwrap().parse().unwrap();
        wall.saturating_sub(Duration::from_secs_f64(ms / 1e3))
    };
    let mut samples: BTreeMap<(&str, &str), Vec<Duration>> = BTreeMap::new();
    for _ in 0..30 {
        for network in ["plain", "sriov-a"] {
            node.pod_networks(network);
            for command in ["ADD", "DEL"] {
                samples.entry((network, command)).or_default().push(own(command));
            }
        }
    }
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    for command in ["ADD", "DEL"] {
        let plain = p50(samples.get_mut(&("plain", command)).unwrap());
        let device = p50(samples.get_mut(&("sriov-a", command)).unwrap());
        eprintln!(
            "{command} kactus own p50 over 30: {plain:.2} ms without a device, {device:.2} ms with one (+{:.2} ms)",
            device - plain
        );
    }
    node.assert_clean(&["vfa"]);
}
