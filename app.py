#!/usr/bin/env python3
"""CDK entry point (cdk.json runs it): wires the stacks and synthesizes them."""

from infra.app import build_app

build_app().synth()
