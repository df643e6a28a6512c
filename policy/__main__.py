"""The llm-gateway policy pack: `pulumi preview --policy-pack policy`."""

from pulumi_policy import PolicyPack
from rules import POLICIES

PolicyPack(name="llm-gateway", policies=POLICIES)
