"""The Dash app: wall screen, dispatcher views, crew page; pages, queries, pure figure builders."""
