//! kubelet's pod-resources API (`v1.PodResourcesLister/List` on
//! `/var/lib/kubelet/pod-resources/kubelet.sock`): the devices device plugins allocated to
//! each container of each pod on the node. The messages are those of k8s.io/kubelet
//! `pkg/apis/podresources/v1/api.proto`, with its field tags; the fields kactus does not read
//! (CPU IDs, memory, topology, DRA resources) are left out and skipped when decoding.

use super::{DeviceError, DevicesByResource};
use crate::grpc::{self, GrpcError, UnixGrpc};
use std::path::Path;
use std::time::Duration;

pub const SERVICE: &str = "v1.PodResourcesLister";
pub const LIST: &str = "/v1.PodResourcesLister/List";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodResourcesRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodResourcesResponse {
    #[prost(message, repeated, tag = "1")]
    pub pod_resources: Vec<PodResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(message, repeated, tag = "3")]
    pub containers: Vec<ContainerResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub devices: Vec<ContainerDevices>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerDevices {
    #[prost(string, tag = "1")]
    pub resource_name: String,
    #[prost(string, repeated, tag = "2")]
    pub device_ids: Vec<String>,
}

/// The devices of every container of pod `namespace/name`, by resource. A device listed for
/// two containers (kubelet hands an init container's devices on) counts once.
pub fn pod_devices(
    socket: &Path,
    timeout: Duration,
    namespace: &str,
    name: &str,
) -> Result<DevicesByResource, DeviceError> {
    let failed = |e: GrpcError| match e {
        GrpcError::Unreachable(cause) => DeviceError::KubeletUnreachable { socket: socket.to_path_buf(), cause },
        GrpcError::Answered(cause) => DeviceError::KubeletRefused { socket: socket.to_path_buf(), cause },
    };
    let kubelet = UnixGrpc::new(socket.to_path_buf(), timeout);
    let list: ListPodResourcesResponse = grpc::block_on(async {
        let mut connection = kubelet.connect().await?;
        kubelet.call(&mut connection, LIST, ListPodResourcesRequest {}).await
    })
    .and_then(|answer| answer)
    .map_err(failed)?;
    let mut found = DevicesByResource::new();
    let pods = list.pod_resources.into_iter().filter(|p| p.namespace == namespace && p.name == name);
    for device in pods.flat_map(|p| p.containers).flat_map(|c| c.devices) {
        found.entry(device.resource_name).or_default().extend(device.device_ids);
    }
    log::debug!("pod-resources: pod {namespace}/{name} has {found:?}");
    Ok(found)
}
