"""llm-gateway: vLLM (GPU) → Ollama (CPU) → OpenAI (cloud) behind one LiteLLM proxy.

Read it as the table of contents: validate the stack config, create the namespace, the tiers (the
default chain's vLLM and the shared Ollama, then each other chain's GPU tiers), the fleet's shared
state (an optional Redis) and the gateway, export what clients need. The chains live in
core/chain.py, every setting in core/settings.py, every name in core/names.py.
"""

import pulumi
import pulumi_kubernetes as k8s

from components.ingress import GatewayIngress, IngressArgs
from components.litellm import LiteLLMArgs, LiteLLMGateway
from components.monitoring import GatewayMonitoring, MonitoringArgs
from components.ollama import OllamaArgs, OllamaBackend, OllamaModel
from components.redis import RedisArgs, RedisStore
from components.stack_config import (
    database_url,
    external_redis_url,
    load_settings,
    openai_api_key,
    operator_master_key,
    tier_keys,
)
from components.vllm import VllmArgs, VllmBackend
from core import kube
from core.chain import chain_names, chains, longest_of
from core.gateway_pod import gateway_files, gateway_url
from core.names import PROJECT, tier_object_name
from core.observability import dashboard, prometheus_rule_spec

settings = load_settings()  # every value checked before any resource exists
instance = pulumi.get_stack()

# One explicit provider: the ambient kubeconfig, or, with `renderYamlToDirectory`, YAML files
# written to that directory instead of a cluster (see the README: Secrets land there in clear).
# ConfigMaps are updated in place: pulumi-kubernetes otherwise replaces one whose data changes
# (deleting a named one first), so any new gateway code would leave the gateway without its config
# for a moment. The pods roll on the config's checksum instead (components/litellm.py).
provider = k8s.Provider(
    "kubernetes",
    render_yaml_to_directory=settings.render_yaml_to_directory,
    enable_config_map_mutable=True,
)
on_cluster = pulumi.ResourceOptions(providers=[provider])

if settings.create_namespace:
    namespace = k8s.core.v1.Namespace(
        "namespace",
        metadata={"name": settings.namespace, "labels": kube.labels(PROJECT, instance, "namespace")},
        opts=pulumi.ResourceOptions(provider=provider),
    ).metadata.name
else:
    namespace = settings.namespace  # an existing namespace: neither created nor ever deleted
placement = kube.Placement(namespace, instance, settings.network_policies)

live_cluster = not settings.render_yaml_to_directory
context = settings.gateway.context_tokens  # one context for every local tier of the default chain
VllmBackend("vllm", VllmArgs(settings.vllm, settings.vllm_replicas, context, placement, live_cluster), opts=on_cluster)
for chain, tier in settings.gpu_tiers:  # the other chains' GPU tiers: a Deployment each
    own = tier_object_name(chain.name, tier.tier_name)
    gpu = VllmArgs(
        tier.vllm, settings.tier_replicas(tier.vllm), settings.chain_context(chain), placement, live_cluster, own
    )
    VllmBackend(own, gpu, opts=on_cluster)
more_models = tuple(
    OllamaModel(tier.ollama.model, tier.ollama.model_digest, settings.chain_context(chain), chain.kind)
    for chain, tier in settings.ollama_models
)
OllamaBackend("ollama", OllamaArgs(settings.ollama, context, placement, more_models), opts=on_cluster)
if settings.redis.mode == "deploy":
    redis = RedisStore("redis", RedisArgs(settings.redis, placement, settings.cluster_domain), opts=on_cluster)
    redis_url = redis.url
else:
    redis_url = external_redis_url(settings)  # None with redis.mode off: every replica counts alone
gateway = LiteLLMGateway(
    "litellm",
    LiteLLMArgs(
        settings.gateway,
        gateway_files(settings),
        chains(settings),
        placement,
        openai_api_key=openai_api_key(settings),
        tier_keys=tier_keys(settings),
        database_url=database_url(settings),
        redis=settings.redis,
        redis_url=redis_url,
        master_key=operator_master_key(),
    ),
    opts=on_cluster,
)
if settings.ingress.enabled:
    edge = IngressArgs(
        settings.ingress,
        placement,
        longest_of(chains(settings)),
        settings.gateway.max_request_bytes,
    )
    GatewayIngress("ingress", edge, opts=on_cluster)
if settings.alerts.enabled or settings.alerts.dashboard:
    monitoring = MonitoringArgs(settings.alerts, prometheus_rule_spec(settings), dashboard(settings), placement)
    GatewayMonitoring("monitoring", monitoring, opts=on_cluster)

pulumi.export("gatewayUrl", gateway_url(settings))
pulumi.export("modelName", settings.gateway.model_name)
pulumi.export("fallbackChain", chain_names(settings))
if settings.chains:  # a one-chain stack's outputs stay as they were
    pulumi.export("chains", {chain.name: [tier.name for tier in chain.tiers] for chain in chains(settings)})
pulumi.export("namespace", placement.namespace)
pulumi.export("vllmReplicas", settings.vllm_replicas)
pulumi.export("masterKey", gateway.master_key)
