//! Dynamic Resource Allocation (`resource.k8s.io/v1`): the devices allocated in the pod's
//! ResourceClaims, with the device ID and resource name their DRA driver publishes as device
//! attributes in its ResourceSlices (`k8s.cni.cncf.io/deviceID`, `k8s.cni.cncf.io/resourceName`,
//! as multus reads them).
//!
//! The pod's claims are those of `spec.resourceClaims` (by name, or the claim made from a
//! template, named in `status.resourceClaimStatuses`) and the claim that serves its extended
//! resources through DRA (`status.extendedResourceClaimStatus`, whose request mappings name
//! the resource of each request). A device without a device-ID attribute is not a network
//! device (a GPU in the same pod, say) and is passed over.

use super::{DeviceError, DevicesByResource};
use crate::kube::{self, KubeError};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEVICE_ID_ATTRIBUTE: &str = "k8s.cni.cncf.io/deviceID";
pub const RESOURCE_NAME_ATTRIBUTE: &str = "k8s.cni.cncf.io/resourceName";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResourceClaim {
    status: ClaimStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ClaimStatus {
    allocation: Option<AllocationResult>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AllocationResult {
    devices: DeviceAllocationResult,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeviceAllocationResult {
    results: Vec<DeviceRequestAllocationResult>,
}

/// One allocated device: `driver`, `pool` and `device` name it uniquely.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeviceRequestAllocationResult {
    request: String,
    driver: String,
    pool: String,
    device: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResourceSlice {
    spec: ResourceSliceSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResourceSliceSpec {
    pool: ResourcePool,
    devices: Vec<Device>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResourcePool {
    name: String,
    /// Slices of an older generation of the pool are outdated, being replaced by the driver.
    generation: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Device {
    name: String,
    attributes: BTreeMap<String, DeviceAttribute>,
}

/// One typed attribute value; only strings are read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeviceAttribute {
    string: Option<String>,
}

/// A claim of the pod, and for the extended-resource claim the resource each request is for.
struct PodClaim {
    name: String,
    resource_of_request: BTreeMap<String, String>,
}

/// The claims the pod uses.
fn pod_claims(pod: &kube::Pod) -> Vec<PodClaim> {
    let claim = |name: &str| PodClaim { name: name.to_string(), resource_of_request: BTreeMap::new() };
    let mut claims: Vec<PodClaim> = pod
        .spec
        .resource_claims
        .iter()
        .filter_map(|c| match &c.resource_claim_name {
            Some(name) => Some(claim(name)),
            None => pod
                .status
                .resource_claim_statuses
                .iter()
                .find(|s| s.name == c.name)
                .and_then(|s| s.resource_claim_name.as_deref())
                .map(claim),
        })
        .collect();
    if let Some(extended) = &pod.status.extended_resource_claim_status {
        let resource_of_request =
            extended.request_mappings.iter().map(|m| (m.request_name.clone(), m.resource_name.clone())).collect();
        claims.push(PodClaim { name: extended.resource_claim_name.clone(), resource_of_request });
    }
    claims
}

/// Every network device allocated in the pod's claims, by resource name, and what was asked
/// (for messages).
pub fn pod_devices(client: &kube::Client, pod: &kube::Pod) -> Result<(String, DevicesByResource), DeviceError> {
    let namespace = &pod.metadata.namespace;
    let claims = pod_claims(pod);
    let mut slices = Slices::default();
    let mut found = DevicesByResource::new();
    for claim in &claims {
        let path = format!(
            "/apis/resource.k8s.io/v1/namespaces/{}/resourceclaims/{}",
            kube::path_segment(namespace),
            kube::path_segment(&claim.name)
        );
        let what = || format!("get ResourceClaim {namespace}/{}", claim.name);
        let rc: ResourceClaim = client.get(&path).map_err(|error| DeviceError::Apiserver { what: what(), error })?;
        let Some(allocation) = rc.status.allocation else {
            return Err(DeviceError::ClaimNotReady(format!(
                "ResourceClaim {namespace}/{} of the pod is not allocated yet",
                claim.name
            )));
        };
        for result in allocation.devices.results {
            let device = slices.device(client, &result)?;
            let attribute = |name: &str| device.and_then(|d| d.attributes.get(name)).and_then(|a| a.string.clone());
            // A subrequest (`request/alternative`) belongs to its request's mapping.
            let request = result.request.split('/').next().unwrap_or_default();
            let resource =
                claim.resource_of_request.get(request).cloned().or_else(|| attribute(RESOURCE_NAME_ATTRIBUTE));
            match (resource, attribute(DEVICE_ID_ATTRIBUTE)) {
                (Some(resource), Some(id)) => {
                    found.entry(resource).or_default().insert(id);
                }
                _ => log::debug!(
                    "DRA: device {}/{}/{} of claim {namespace}/{} has no {DEVICE_ID_ATTRIBUTE} and {RESOURCE_NAME_ATTRIBUTE}: not a network device",
                    result.driver,
                    result.pool,
                    result.device,
                    claim.name
                ),
            }
        }
    }
    log::debug!("DRA: pod {namespace}/{} has {found:?}", pod.metadata.name);
    let asked = match claims.len() {
        0 => "the pod has no DRA claims".to_string(),
        n => format!("the pod's {n} DRA claim(s)"),
    };
    Ok((asked, found))
}

/// The ResourceSlices of each driver, listed once per call.
#[derive(Default)]
struct Slices {
    by_driver: BTreeMap<String, Vec<ResourceSlice>>,
}

impl Slices {
    /// The allocated device as its driver publishes it, from the newest generation of its
    /// pool; `None` if the driver no longer lists it.
    fn device(
        &mut self,
        client: &kube::Client,
        result: &DeviceRequestAllocationResult,
    ) -> Result<Option<&Device>, DeviceError> {
        if !self.by_driver.contains_key(&result.driver) {
            let selector = format!("spec.driver={}", result.driver);
            let list: kube::List<ResourceSlice> = client
                .list("/apis/resource.k8s.io/v1/resourceslices", &[("fieldSelector", &selector)])
                .map_err(|error: KubeError| DeviceError::Apiserver {
                    what: format!("list ResourceSlices of driver {}", result.driver),
                    error,
                })?;
            self.by_driver.insert(result.driver.clone(), list.items);
        }
        let pool: Vec<&ResourceSlice> =
            self.by_driver[&result.driver].iter().filter(|s| s.spec.pool.name == result.pool).collect();
        let newest = pool.iter().map(|s| s.spec.pool.generation).max().unwrap_or_default();
        Ok(pool
            .into_iter()
            .filter(|s| s.spec.pool.generation == newest)
            .flat_map(|s| &s.spec.devices)
            .find(|d| d.name == result.device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_pods_claims_by_name_by_template_and_for_extended_resources() {
        let pod: kube::Pod = serde_json::from_value(json!({
            "metadata": {"name": "app1", "namespace": "default"},
            "spec": {"resourceClaims": [
                {"name": "shared", "resourceClaimName": "team-vfs"},
                {"name": "vf", "resourceClaimTemplateName": "one-vf"},
                {"name": "unneeded", "resourceClaimTemplateName": "maybe"}]},
            "status": {
                "resourceClaimStatuses": [{"name": "vf", "resourceClaimName": "app1-vf-x7k2p"}, {"name": "unneeded"}],
                "extendedResourceClaimStatus": {"resourceClaimName": "app1-extended-resources-9f8d",
                    "requestMappings": [{"containerName": "c", "resourceName": "intel.com/sriov", "requestName": "container-0-request-0"}]}}
        }))
        .unwrap();
        let claims = pod_claims(&pod);
        let names: Vec<&str> = claims.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["team-vfs", "app1-vf-x7k2p", "app1-extended-resources-9f8d"]);
        assert_eq!(claims[2].resource_of_request["container-0-request-0"], "intel.com/sriov");
    }
}
