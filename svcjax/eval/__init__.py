"""Evaluation: conversion-quality metrics, the evaluation runner, and config sweeps."""
