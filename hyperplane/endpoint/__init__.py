"""The AWS-compatible endpoint: boto3, the AWS CLI and SDK-based code drive the emulator
through the wire protocols of Lambda (REST-JSON), EC2 (query, XML) and STS (query, XML),
read from botocore's own service models (side effects: an HTTP server on loopback).
"""
