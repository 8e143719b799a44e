"""The app's pages: each file is one page, run by Streamlit as a script, thin over the core."""
