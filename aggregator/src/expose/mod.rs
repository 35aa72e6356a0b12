//! /federate.
