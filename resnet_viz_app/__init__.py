"""The Streamlit app of resnet-viz: ``app.py`` here is its main script and ``app_pages/`` its pages, shipped in
the package so that ``resnet-viz app`` starts it from any folder. Only the app imports Streamlit; ``resnet_viz``
(the core) never does."""
